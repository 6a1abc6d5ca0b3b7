"""Admin logins: failures counted per client address and per username in the cache,
then a clear refusal until the window has passed (messaging/admin/login_throttle.py)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from messaging.admin import login_throttle

pytestmark = pytest.mark.django_db

PASSWORD = "right-horse-battery"


@pytest.fixture(autouse=True)
def _fresh_counts(settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    settings.ADMIN_LOGIN_LOCKOUT = 600
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("boss", "boss@example.com", PASSWORD)


def log_in(username: str, password: str, address: str = "192.0.2.1"):
    return Client(REMOTE_ADDR=address).post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}
    )


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def refused_as_throttled(response) -> bool:
    return response.status_code == 200 and b"Too many failed login attempts" in response.content


def test_the_right_password_still_logs_in(admin_user):
    assert logged_in(log_in("boss", PASSWORD))


def test_failures_from_one_address_lock_it_out_even_with_the_right_password(admin_user):
    for _ in range(3):
        response = log_in("boss", "wrong")
        assert response.status_code == 200 and not refused_as_throttled(response)
    assert refused_as_throttled(log_in("boss", PASSWORD))
    # Another user from the same address is refused too: the address is locked.
    assert refused_as_throttled(log_in("someone", "else"))


def test_failures_for_one_username_lock_it_from_every_address(admin_user):
    for n in range(3):
        log_in("boss", "wrong", address=f"198.51.100.{n}")
    assert refused_as_throttled(log_in("boss", PASSWORD, address="203.0.113.9"))
    # Usernames are compared as typed by people: case and spaces do not reset the count.
    assert refused_as_throttled(log_in(" BOSS ", PASSWORD, address="203.0.113.10"))


def test_the_lock_ends_with_its_window(admin_user):
    now = 1_000_000.0
    for _ in range(3):
        login_throttle.record_failure("192.0.2.1", "boss", now=now)
    assert login_throttle.locked_for("192.0.2.1", "boss", now=now + 1) == 599
    assert login_throttle.locked_for("192.0.2.1", "boss", now=now + 600) == 0


def test_a_success_clears_the_count(admin_user):
    log_in("boss", "wrong")
    log_in("boss", "wrong")
    assert logged_in(log_in("boss", PASSWORD))
    log_in("boss", "wrong")
    log_in("boss", "wrong")
    assert logged_in(log_in("boss", PASSWORD))  # 2 + 2 failures, never 3 in a row
