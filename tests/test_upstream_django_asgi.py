"""upstream.django_asgi: the copy of Django's ASGIHandler.handle and the middleware swap.

Fails when Django changes what was copied or relied on; checks that on another
Django the handler does what Django does (with a warning).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging

import pytest
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.core.signals import request_started

from smsapi.handlers import ApiASGIHandler
from upstream import django_asgi

# sha256 (first 16 hex digits) of the source read when the copy was made (Django 5.2.19).
UPSTREAM_SOURCE = {
    "ASGIHandler.__call__": "f756809e9c9308dc",
    "ASGIHandler.handle": "98faeb5bef800331",
    "BaseHandler.load_middleware": "a1fb7ee5f8586195",
}


def source_hash(func) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]


async def get(app, path: str) -> tuple[int, dict[bytes, bytes]]:
    """One GET through the ASGI ``app``: its status and headers."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays until the answer is sent

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 1),
        "server": ("localhost", 80),
    }
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


def test_the_copied_code_is_still_djangos():
    """A new Django: compare its ``handle``/``__call__`` with the copy in
    upstream/django_asgi.py, carry its changes over, then record the new hashes."""
    assert django_asgi.skips_request_signals()
    found = {
        "ASGIHandler.__call__": source_hash(ASGIHandler.__call__),
        "ASGIHandler.handle": source_hash(ASGIHandler.handle),
        "BaseHandler.load_middleware": source_hash(BaseHandler.load_middleware),
    }
    assert found == UPSTREAM_SOURCE


def test_what_the_copy_relies_on_is_there():
    handle = inspect.getsource(ASGIHandler.handle)
    # Subclasses' overrides are called where Django calls them, with these arguments.
    assert "await self.read_body(receive)" in handle
    assert "self.create_request(scope, body_file)" in handle
    assert "signals.request_started.asend" in handle  # what the copy leaves out
    assert "ThreadSensitiveContext()" in inspect.getsource(ASGIHandler.__call__)
    assert "settings.MIDDLEWARE" in inspect.getsource(BaseHandler.load_middleware)
    for name in ("send_response", "run_get_response", "listen_for_disconnect"):
        assert inspect.iscoroutinefunction(getattr(ASGIHandler, name)), name


@pytest.mark.django_db
async def test_the_api_handler_sends_no_request_started():
    started = []

    def receiver(**kwargs):
        started.append(kwargs)

    request_started.connect(receiver)
    try:
        status, _ = await get(ApiASGIHandler(), "/healthz")
    finally:
        request_started.disconnect(receiver)
    assert status == 200
    assert started == []


async def test_the_api_chain_is_api_middleware_and_the_setting_is_restored():
    pages = settings.MIDDLEWARE
    handler = ApiASGIHandler()
    assert settings.MIDDLEWARE is pages
    status, headers = await get(handler, "/v1/no-such-thing")
    assert status == 404
    assert headers[b"Content-Type"] == b"application/json"  # ApiErrorsMiddleware
    assert b"X-Frame-Options" not in headers  # no page middleware (clickjacking)


@pytest.mark.django_db
async def test_on_another_django_the_handler_is_djangos_with_a_warning(another_version, caplog):
    started = []

    def receiver(**kwargs):
        started.append(kwargs)

    with caplog.at_level(logging.WARNING, logger="upstream"):
        handler = ApiASGIHandler()
    assert not handler.skips_request_signals
    assert "ASGIHandler.handle" in caplog.text
    request_started.connect(receiver)
    try:
        status, _ = await get(handler, "/healthz")
    finally:
        request_started.disconnect(receiver)
    assert status == 200
    assert len(started) == 1  # Django's own handle ran
    # The middleware swap has no public fallback: it is done, and said.
    assert "settings.MIDDLEWARE swap" in caplog.text
    status, headers = await get(handler, "/v1/no-such-thing")
    assert (status, headers[b"Content-Type"]) == (404, b"application/json")
