"""Two Django ASGI handlers: a lean one for the API, the full one for pages.

Django runs each ``MiddlewareMixin`` middleware's hooks on one shared thread
(``sync_to_async(thread_sensitive=True)``), and a single sync-only middleware
turns the whole chain synchronous. The admin and the dashboard need sessions,
CSRF, authentication and messages; the API needs none of them (it is keyed by
``Authorization``, never by cookies). So ``/v1/…``, ``/healthz``, ``/readyz``
and ``/metrics`` go through ``API_MIDDLEWARE`` (natively async only) and every
other path through ``MIDDLEWARE``. Measured: the API's request path went from
~16 thread hops to none.

The API's handler also leaves out Django's per-request thread and request
signals (``upstream.django_asgi``, a copy of Django's ``handle``), bounds the
body it reads (``HTTP_MAX_BODY_SIZE``: 413 JSON before storing any of it) and
answers its own request errors as JSON.
"""

from __future__ import annotations

import logging
import tempfile

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.http import HttpResponse

from messaging.orm_thread import connection_per_call
from smsapi.middleware import api_error_for_exception, error_response
from upstream.django_asgi import ASGIHandlerWithoutRequestSignals, load_middleware_from

logger = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """The request's body is over ``HTTP_MAX_BODY_SIZE``."""


def declared_length(scope) -> int | None:
    """The request's Content-Length, None when absent or not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def body_too_large() -> HttpResponse:
    return error_response(
        413, f"request body too large (at most {settings.HTTP_MAX_BODY_SIZE} bytes)"
    )


class ApiASGIHandler(ASGIHandlerWithoutRequestSignals):
    """Django's ASGI handler with ``settings.API_MIDDLEWARE`` as its middleware,
    without a thread of its own per request nor the request signals
    (``upstream.django_asgi``: the API's views run their store work in threads of
    their own, ``AsyncAPIView``), a bound on the body it reads and JSON answers
    to its own request errors.
    """

    async def __call__(self, scope, receive, send):
        declared = declared_length(scope) if scope["type"] == "http" else None
        if declared is not None and declared > settings.HTTP_MAX_BODY_SIZE:
            # Answered before Django sees it: nothing reads a body of any size.
            await self.send_response(body_too_large(), send)
            return
        try:
            await super().__call__(scope, receive, send)
        except BodyTooLarge:  # from read_body, before anything was sent
            await self.send_response(body_too_large(), send)

    async def read_body(self, receive):
        """Django's ``read_body`` with a bound: ``BodyTooLarge`` past
        ``HTTP_MAX_BODY_SIZE`` as it arrives, before it is stored (a declared
        length over it is answered by ``__call__``)."""
        limit = settings.HTTP_MAX_BODY_SIZE
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by handle()
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                body_file.close()
                raise BodyTooLarge
            body_file.write(chunk)
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file

    def create_request(self, scope, body_file):
        """Django's, with its two error answers (a path that is not UTF-8, a
        body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``) as JSON."""
        try:
            return self.request_class(scope, body_file), None
        except UnicodeDecodeError:
            logger.warning("Bad Request (UnicodeDecodeError)", exc_info=True)
            return None, error_response(400, "the request is not valid UTF-8")
        except RequestDataTooBig as exc:
            return None, api_error_for_exception(exc)

    def make_view_atomic(self, view):
        """Sync views (health, metrics, the schema) open and close their own connection.

        Django closes the sync thread's connections on the request signals, which
        this handler does not send (see ``handle``).
        """
        view = super().make_view_atomic(view)
        return view if iscoroutinefunction(view) else connection_per_call(view)

    def load_middleware(self, is_async: bool = False) -> None:
        load_middleware_from(self, settings.API_MIDDLEWARE, is_async)


class PathDispatcher:
    """An ASGI app that hands HTTP requests to ``api`` or ``pages`` by path."""

    def __init__(self, api, pages, api_prefixes: tuple[str, ...]):
        self.api = api
        self.pages = pages
        self.api_prefixes = api_prefixes

    async def __call__(self, scope, receive, send):
        app = self.api if scope["path"].startswith(self.api_prefixes) else self.pages
        return await app(scope, receive, send)
