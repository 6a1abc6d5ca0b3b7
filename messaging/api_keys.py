"""API keys: made, checked and revoked here, and nowhere else.

A key looks like ``sk_<prefix><secret>``: a fixed marker, eight characters that
are stored in clear (to tell keys apart in lists and logs) and a secret. Only
the SHA-256 of the whole key is kept, so the key is shown once, when it is
made, and a copy of the database does not hand out working keys. A key is
found by its prefix, then its hash is compared in constant time.

Whether keys are asked for at all is the ``SMSAPI_AUTH`` setting: ``off`` (the
demo default: everyone sees everything) or ``required``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from messaging.models import ApiKey

KEY_MARKER = "sk_"
PREFIX_LENGTH = 8
PREFIX_ALPHABET = string.ascii_letters + string.digits
SECRET_BYTES = 32  # token_urlsafe: 43 characters
WEBHOOK_SECRET_BYTES = 32

AUTH_REQUIRED = "required"
AUTH_OFF = "off"
AUTH_MODES = (AUTH_REQUIRED, AUTH_OFF)

MISSING_KEY = "missing API key: send the header Authorization: Bearer <key>"
INVALID_KEY = "invalid API key"
REVOKED_KEY = "API key revoked"


class KeyRejected(Exception):
    """No usable key came with a request; ``str()`` is the text for the client."""


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: ``key`` is the only copy of the secret there will ever be."""

    api_key: ApiKey
    key: str


def auth_required() -> bool:
    """Whether the API, the sockets and the streams ask for a key (``SMSAPI_AUTH``)."""
    return settings.SMSAPI_AUTH == AUTH_REQUIRED


def hash_key(key: str) -> str:
    """The SHA-256 of a key, as kept in ``ApiKey.key_hash``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new random key and its prefix: ``("sk_<prefix><secret>", "<prefix>")``.

    The prefix is letters and digits only: operators type it on the command line
    (``apikey revoke <prefix>``), where one starting with "-" reads as an option.
    """
    prefix = "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return f"{KEY_MARKER}{prefix}{secrets.token_urlsafe(SECRET_BYTES)}", prefix


def prefix_of(key: str) -> str | None:
    """The prefix of something shaped like a key, else None."""
    if not key.startswith(KEY_MARKER) or len(key) <= len(KEY_MARKER) + PREFIX_LENGTH:
        return None
    return key[len(KEY_MARKER) : len(KEY_MARKER) + PREFIX_LENGTH]


def issue_key(api_key: ApiKey, attempts: int = 5) -> str:
    """Give an unsaved ``ApiKey`` a fresh key and webhook secret, save it, and
    return the key. A prefix that is already taken (rare) is drawn again."""
    if api_key.pk is not None:
        raise ValueError("a saved API key keeps its key; make a new one instead")
    attempt = 0
    while True:
        attempt += 1
        key, prefix = generate_key()
        api_key.prefix = prefix
        api_key.key_hash = hash_key(key)
        if not api_key.webhook_secret:
            api_key.webhook_secret = secrets.token_urlsafe(WEBHOOK_SECRET_BYTES)
        try:
            with transaction.atomic():
                api_key.save(force_insert=True)
        except IntegrityError:
            api_key.pk = None
            if attempt >= attempts:
                raise
            continue
        return key


def create_key(
    name: str,
    rate_limit: int = 0,
    callback_url: str = "",
    receive_incoming: bool = True,
    manage_connectors: bool = False,
) -> IssuedKey:
    """Make and store a key; the caller shows ``IssuedKey.key`` once."""
    api_key = ApiKey(
        name=name,
        rate_limit=rate_limit,
        default_callback_url=callback_url,
        receive_incoming=receive_incoming,
        manage_connectors=manage_connectors,
    )
    return IssuedKey(api_key, issue_key(api_key))


def verify_key(key: str) -> ApiKey:
    """The stored key that ``key`` is, or KeyRejected (invalid or revoked)."""
    prefix = prefix_of(key.strip())
    api_key = ApiKey.objects.filter(prefix=prefix).first() if prefix else None
    # Compared in constant time, so the answer's timing does not tell how close a guess was.
    if api_key is None or not hmac.compare_digest(api_key.key_hash, hash_key(key.strip())):
        raise KeyRejected(INVALID_KEY)
    if api_key.revoked_at is not None:
        raise KeyRejected(REVOKED_KEY)
    return api_key


def revoke_key(prefix: str) -> ApiKey:
    """Revoke the key with this prefix (a whole key is taken too); ApiKey.DoesNotExist
    when there is none. Revoking twice keeps the first time."""
    prefix = prefix.strip()
    if prefix.startswith(KEY_MARKER):
        prefix = prefix_of(prefix) or prefix
    api_key = ApiKey.objects.get(prefix=prefix)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def revoked_among(key_ids: Iterable[int]) -> set[int]:
    """Which of these keys may no longer be used: revoked, or gone from the store.

    One query for any number of keys: open sockets and streams ask it every
    few seconds (``messaging.streams.ws_auth.KeyWatch``), not per message.
    """
    wanted = set(key_ids)
    if not wanted:
        return set()
    active = ApiKey.objects.filter(pk__in=wanted, revoked_at__isnull=True).values_list(
        "pk", flat=True
    )
    return wanted - set(active)


def credentials(authorization: str | None, query_key: str | None) -> str | None:
    """The key a client sent: ``Authorization: Bearer <key>``, else ``?api_key=``
    (for browsers' EventSource and WebSocket, which cannot set headers)."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise KeyRejected("invalid Authorization header: Bearer <key> expected")
        return value.strip()
    if query_key and query_key.strip():
        return query_key.strip()
    return None


def authenticate(authorization: str | None, query_key: str | None) -> ApiKey | None:
    """The key behind a request, or None when authentication is off.

    With ``SMSAPI_AUTH=required``, no key or a bad one raises KeyRejected.
    Synchronous (the ORM): call it from a thread in async code.
    """
    if not auth_required():
        return None
    key = credentials(authorization, query_key)
    if key is None:
        raise KeyRejected(MISSING_KEY)
    return verify_key(key)


def scoped_idempotency_key(key: str | None, api_key: ApiKey | None) -> str | None:
    """Idempotency-Key as stored: per API key, so two clients never share one."""
    if not key or api_key is None:
        return key or None
    return f"{api_key.pk}:{key}"
