"""messaging.api_keys and messaging.api.throttling on their own: making, checking,
revoking keys, reading credentials, and counting a key's requests."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from messaging import api_keys
from messaging.api.throttling import check_rate
from messaging.api_keys import KeyRejected
from messaging.models import ApiKey


def test_a_key_is_marker_prefix_secret():
    key, prefix = api_keys.generate_key()
    assert key.startswith(f"sk_{prefix}")
    assert len(prefix) == 8
    assert len(key) > 3 + 8 + 40  # a secret of 32 random bytes
    assert api_keys.prefix_of(key) == prefix
    assert api_keys.generate_key()[0] != key


def test_prefixes_can_be_typed_on_the_command_line():
    # token_urlsafe gave "-..." one time in 64: `apikey revoke -...` read it as an option.
    prefixes = {api_keys.generate_key()[1] for _ in range(2000)}
    assert all(p.isascii() and p.isalnum() for p in prefixes)
    assert len(prefixes) > 1990


@pytest.mark.parametrize("value", ["", "sk_", "sk_abcdefgh", "pk_abcdefgh123", "abcdefgh"])
def test_prefix_of_what_is_no_key(value):
    assert api_keys.prefix_of(value) is None


@pytest.mark.django_db
def test_only_the_hash_is_stored_and_the_key_verifies():
    issued = api_keys.create_key("alice", rate_limit=7, callback_url="https://a.example/hook")
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert stored.key_hash == hashlib.sha256(issued.key.encode()).hexdigest()
    assert issued.key not in {stored.key_hash, stored.prefix, stored.webhook_secret}
    assert stored.prefix == api_keys.prefix_of(issued.key)
    assert len(stored.webhook_secret) >= 40
    assert (stored.rate_limit, stored.default_callback_url) == (7, "https://a.example/hook")
    assert stored.receive_incoming is True
    assert api_keys.verify_key(issued.key) == stored
    assert api_keys.verify_key(f"  {issued.key} ") == stored


@pytest.mark.django_db
def test_a_wrong_secret_or_unknown_prefix_is_invalid():
    issued = api_keys.create_key("alice")
    tampered = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    unknown = f"sk_{secrets.token_urlsafe(40)}"
    for key in (tampered, unknown, "not-a-key", issued.key[:11]):
        with pytest.raises(KeyRejected, match="^invalid API key$"):
            api_keys.verify_key(key)


@pytest.mark.django_db
def test_revoked_keys_say_so_and_revoking_twice_keeps_the_first_time():
    issued = api_keys.create_key("alice")
    first = api_keys.revoke_key(issued.api_key.prefix).revoked_at
    assert first is not None
    with pytest.raises(KeyRejected, match="^API key revoked$"):
        api_keys.verify_key(issued.key)
    assert api_keys.revoke_key(issued.key).revoked_at == first  # a whole key is taken too
    with pytest.raises(ApiKey.DoesNotExist):
        api_keys.revoke_key("nosuchpx")


@pytest.mark.django_db
def test_a_saved_key_is_never_reissued():
    issued = api_keys.create_key("alice")
    with pytest.raises(ValueError):
        api_keys.issue_key(issued.api_key)


def test_credentials_header_first_then_query():
    assert api_keys.credentials("Bearer sk_a", "sk_b") == "sk_a"
    assert api_keys.credentials("bearer   sk_a ", None) == "sk_a"
    assert api_keys.credentials(None, "sk_b") == "sk_b"
    assert api_keys.credentials("", " ") is None
    for header in ("Basic dXNlcjpwdw==", "Bearer", "Bearer  ", "sk_a"):
        with pytest.raises(KeyRejected, match="Bearer <key> expected"):
            api_keys.credentials(header, None)


@pytest.mark.django_db
def test_authenticate_follows_the_setting(settings):
    issued = api_keys.create_key("alice")
    settings.SMSAPI_AUTH = "off"
    assert api_keys.authenticate(None, None) is None
    assert api_keys.authenticate("Bearer nonsense", None) is None  # off: keys are not looked at
    settings.SMSAPI_AUTH = "required"
    with pytest.raises(KeyRejected, match="^missing API key"):
        api_keys.authenticate(None, None)
    assert api_keys.authenticate(None, issued.key) == issued.api_key
    assert api_keys.authenticate(f"Bearer {issued.key}", None) == issued.api_key


def test_idempotency_keys_are_scoped_per_api_key():
    api_key = ApiKey(pk=42)
    assert api_keys.scoped_idempotency_key("abc", api_key) == "42:abc"
    assert api_keys.scoped_idempotency_key("abc", None) == "abc"
    assert api_keys.scoped_idempotency_key("", api_key) is None
    assert api_keys.scoped_idempotency_key(None, None) is None


# --- rate limits ----------------------------------------------------------------------


def unsaved_key(rate_limit: int) -> ApiKey:
    """check_rate needs only the prefix (its cache key) and the limit."""
    return ApiKey(prefix=secrets.token_hex(6), rate_limit=rate_limit)


def test_no_key_or_no_limit_is_never_throttled():
    assert check_rate(None) is None
    unlimited = unsaved_key(0)
    assert all(check_rate(unlimited, now=1000.0) is None for _ in range(100))


def test_a_full_minute_refuses_until_the_oldest_request_leaves_it():
    key = unsaved_key(2)
    assert check_rate(key, now=1000.2) is None
    assert check_rate(key, now=1030.7) is None
    # Over the limit: the request at 1000 leaves the minute at 1060.
    assert check_rate(key, now=1050.0) == 10
    assert check_rate(key, now=1059.5) == 1
    assert check_rate(key, now=1060.0) is None  # the one at 1000 is out now
    assert check_rate(key, now=1060.5) == 30  # 1030 and 1060 are in: wait for 1030 to go


def test_refused_requests_do_not_use_up_the_allowance():
    key = unsaved_key(1)
    assert check_rate(key, now=2000.0) is None
    for moment in (2001.0, 2010.0, 2059.0):
        assert check_rate(key, now=moment) is not None
    assert check_rate(key, now=2060.0) is None


def test_a_burst_in_one_second_waits_the_whole_minute():
    key = unsaved_key(3)
    assert [check_rate(key, now=3000.25) for _ in range(3)] == [None, None, None]
    assert check_rate(key, now=3000.5) == 60  # ceil(3060 - 3000.5)
