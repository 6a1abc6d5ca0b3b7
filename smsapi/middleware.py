"""Middleware of our own for the API's chain, natively async so it stays off threads.

Every error the API answers is ``{"error": "..."}``, whoever produced it: a view,
DRF, Django's URL resolver (404), a plain Django view's ``require_GET`` (405),
Django's request parsing (400, 413) or an unexpected exception (500). Which
exception becomes which answer is decided once, in ``api_error_for_exception``;
``ApiErrorsMiddleware`` and the URLconf's ``handler400``/``handler500``
(``smsapi.urls``) both use it.

The same middleware refuses, for ``/v1``, a Host not in ``ALLOWED_HOSTS`` and,
while keys are not required, a write from a page of another web site; the
WebSocket handshakes get the same two checks from ``WebSocketGuard``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port, validate_host

from messaging.api.errors import STORE_UNAVAILABLE
from messaging.api_keys import auth_required

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/problem+json")
# The words of a rewritten error answer, by status (Django's pages say no more).
_WORDS = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    406: "not acceptable",
    408: "request timeout",
    413: "request body too large",
    414: "request URI too long",
    415: "unsupported media type",
    429: "too many requests",
    500: "internal error (logged on the server)",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def api_paths() -> tuple[str, ...]:
    """Path prefixes served by the API's handler and chain (``smsapi.handlers``)."""
    prefix = f"/{settings.SMSAPI_PREFIX}" if settings.SMSAPI_PREFIX else ""
    return (f"{prefix}/v1/", "/healthz", "/readyz", "/metrics")


def error_response(status: int, error: str, **headers: str) -> JsonResponse:
    """``{"error": error}`` with ``status`` and extra headers."""
    response = JsonResponse({"error": error}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def store_unavailable() -> JsonResponse:
    """The 503 of a database outage, with the seconds to wait before trying again."""
    return error_response(
        503, STORE_UNAVAILABLE, Retry_After=str(settings.STORE_UNAVAILABLE_RETRY_AFTER)
    )


def is_store_outage(exc: BaseException) -> bool:
    """True for a database that is down, unreachable, locked or too slow.

    ``OperationalError`` covers a refused or lost connection, a full pool
    (psycopg_pool's ``PoolTimeout`` is a psycopg ``OperationalError``, which Django
    wraps), a statement cancelled by ``statement_timeout`` and SQLite's
    "database is locked". ``InterfaceError`` is a connection already closed.
    Other database errors (bad data, a bug) are 500s: retrying would not help.
    """
    return isinstance(exc, OperationalError | InterfaceError)


def api_error_for_exception(exc: BaseException) -> JsonResponse | None:
    """The API's answer to an exception, or None for "unexpected: a 500"."""
    if is_store_outage(exc):
        logger.warning("the message store is unavailable: %s", exc)
        return store_unavailable()
    if isinstance(exc, RequestDataTooBig):
        return error_response(
            413,
            f"request body too large (form data is limited to "
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)",
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return error_response(400, "too many fields in the request body")
    if isinstance(exc, DisallowedHost):
        return error_response(400, "this server does not answer to that Host (ALLOWED_HOSTS)")
    if isinstance(exc, SuspiciousOperation):
        return error_response(400, "bad request")
    return None


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").split(";")[0].strip() in JSON_TYPES


def as_json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """``response`` as ``{"error": ...}`` unless it is JSON (or a stream) already.

    Keeps the status and the headers that matter (``Allow``, ``Retry-After``,
    ``WWW-Authenticate``, CORS...); drops the body (Django's HTML pages, debug
    pages included: no stack trace leaves the server).
    """
    if response.status_code < 400 or response.streaming or _is_json(response):
        return response
    status = response.status_code
    if status == 404:
        error = f"no such endpoint: {request.path[:200]}"
    elif status == 405:
        error = f'method "{request.method[:20]}" not allowed'
    else:
        error = _WORDS.get(status, response.reason_phrase.lower())
    replaced = JsonResponse({"error": error}, status=status)
    for name, value in response.items():
        if name.lower() not in ("content-type", "content-length"):
            replaced[name] = value
    return replaced


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def origin_allowed(origin: str, host: str) -> bool:
    """Whether a page of ``origin`` may call the API: its own origin, or one
    the CORS settings allow (``CORS_ALLOWED_ORIGINS`` and its defaults)."""
    if urlsplit(origin).netloc == host:
        return True
    if settings.CORS_ALLOW_ALL_ORIGINS or origin in settings.CORS_ALLOWED_ORIGINS:
        return True
    return any(
        re.match(pattern, origin)
        for pattern in getattr(settings, "CORS_ALLOWED_ORIGIN_REGEXES", ())
    )


def refused_cross_site(request: HttpRequest) -> JsonResponse | None:
    """A 403 for a browser page of another site that writes to an API without keys.

    CORS only stops a page from reading an answer: a plain HTML form on any
    web site, opened by someone on the gateway's network, can still POST to
    ``/v1/send``. With keys required the form has no key; without, the
    ``Origin`` a browser puts on such a request is all there is to tell it
    apart (clients that are not browsers send none and are not affected).
    """
    if request.method in SAFE_METHODS or auth_required():
        return None
    origin = request.headers.get("Origin")
    if origin is None or origin_allowed(origin, request.get_host()):
        return None
    logger.warning("refused a cross-site %s from origin %.100s", request.method, origin)
    return error_response(
        403, "requests from other web sites are refused (see CORS_ALLOWED_ORIGINS)"
    )


class ApiErrorsMiddleware:
    """JSON errors, the Host and Origin checks and ``nosniff`` for the API's chain.

    Natively async (no thread hop per request). Django calls ``process_exception``
    (on its sync thread, only when a view raises): a database outage becomes a
    503 there, before Django's 500 handling. The Host header is checked against
    ``ALLOWED_HOSTS`` for ``/v1`` (Django's ``CommonMiddleware``, which does it
    for the pages, is not in this chain); ``/healthz``, ``/readyz`` and
    ``/metrics`` answer to any Host, as probes and scrapers use a pod's address.
    """

    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)  # Django then awaits it, no thread hop
        self.host_checked = api_paths()[0]  # /v1/ (under SMSAPI_PREFIX)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(self.host_checked):
            try:
                request.get_host()
            except DisallowedHost as exc:
                logger.warning("refused Host header: %s", exc)
                response = api_error_for_exception(exc)
                response.headers.setdefault("X-Content-Type-Options", "nosniff")
                return response
            refused = refused_cross_site(request)
            if refused is not None:
                refused.headers.setdefault("X-Content-Type-Options", "nosniff")
                return refused
        response = as_json_error(request, await self.get_response(request))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.status_code == 503 and request.path.startswith(self.host_checked):
            # Every /v1 503 is "try again": say when (views answer some themselves).
            response.headers.setdefault("Retry-After", str(settings.STORE_UNAVAILABLE_RETRY_AFTER))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception):
        return api_error_for_exception(exception)


class WebSocketGuard:
    """The same Host and Origin rules for WebSocket handshakes (ASGI middleware).

    A handshake whose Host is not in ``ALLOWED_HOSTS`` (a DNS-rebinding page),
    or, with keys not required, whose Origin is another web site's, is refused
    (HTTP 403) before any consumer runs. CORS does not apply to WebSockets: a
    page of any site may open one, so this is the only check.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self.allowed(scope):
            from channels.security.websocket import WebsocketDenier

            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def allowed(scope) -> bool:
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", ())}
        host = headers.get(b"host")
        # No Host at all is no browser (browsers always send one): nothing to rebind.
        if host is not None and not validate_host(
            split_domain_port(host)[0], settings.ALLOWED_HOSTS
        ):
            logger.warning("refused a WebSocket for Host %.100s", host)
            return False
        origin = headers.get(b"origin")
        if origin is None or auth_required() or origin_allowed(origin, host or ""):
            return True
        logger.warning("refused a cross-site WebSocket from origin %.100s", origin)
        return False
