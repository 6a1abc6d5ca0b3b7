"""Admin login throttling: failures counted per client address and per username.

After ``ADMIN_LOGIN_MAX_FAILURES`` failed logins within ``ADMIN_LOGIN_LOCKOUT``
seconds, from one address or for one username, further attempts from that
address or for that username are refused, right password or not, until the
window has passed. Counted in Django's cache (Redis when ``REDIS_URL`` is set,
so every server process shares the count; per process otherwise). A successful
login clears its username's and address's count.

Our own rather than django-axes: axes brings a model, migrations, an
authentication backend and a middleware for what is a counter in the cache;
this is hooked into the admin through its public ``AdminSite.login_form``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest

logger = logging.getLogger(__name__)


def max_failures() -> int:
    return int(getattr(settings, "ADMIN_LOGIN_MAX_FAILURES", 5))


def lockout_seconds() -> int:
    return int(getattr(settings, "ADMIN_LOGIN_LOCKOUT", 900))


def _cache_key(kind: str, value: str) -> str:
    # Hashed: a username is any text, cache keys are not (memcached, Redis limits).
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
    return f"smsapi:login-failures:{kind}:{digest}"


def _keys(address: str, username: str) -> list[str]:
    keys = [_cache_key("address", address or "-")]
    if username:
        keys.append(_cache_key("username", username))
    return keys


def locked_for(address: str, username: str, now: float | None = None) -> int:
    """Seconds until ``address`` or ``username`` may try again; 0 when it may now."""
    now = time.time() if now is None else now
    keys = _keys(address, username)
    found = cache.get_many([*keys, *(f"{key}:since" for key in keys)])
    wait = 0
    for key in keys:
        if found.get(key, 0) >= max_failures():
            since = found.get(f"{key}:since", now)
            wait = max(wait, math.ceil(since + lockout_seconds() - now))
    return max(wait, 0)


def record_failure(address: str, username: str, now: float | None = None) -> None:
    """Count one failed login against ``address`` and ``username``.

    Atomic on both caches (``add`` then ``incr``); the count lives for the window
    that its first failure started, and its start is kept beside it.
    """
    now = time.time() if now is None else now
    window = lockout_seconds()
    for key in _keys(address, username):
        cache.add(f"{key}:since", now, timeout=window)
        cache.add(key, 0, timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
            cache.set(f"{key}:since", now, timeout=window)


def clear(address: str, username: str) -> None:
    keys = _keys(address, username)
    cache.delete_many([*keys, *(f"{key}:since" for key in keys)])


def client_address(request: HttpRequest | None) -> str:
    """The client's address as the server saw it (daphne's ``--proxy-headers``
    puts the proxy's X-Forwarded-For there)."""
    return (request.META.get("REMOTE_ADDR") if request is not None else None) or "-"


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing clients and usernames locked out by failures."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        wait = locked_for(address, username)
        if wait:
            logger.warning("admin login refused: too many failures", extra={"client": address})
            raise ValidationError(
                "Too many failed login attempts. Try again in %(minutes)d minute(s).",
                code="throttled",
                params={"minutes": max(1, math.ceil(wait / 60))},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            record_failure(address, username)
            logger.warning("admin login failed", extra={"client": address})
            raise
        clear(address, username)
        return cleaned
