"""Two Django ASGI handlers: a lean one for the API, the full one for pages.

Django runs each ``MiddlewareMixin`` middleware's hooks on one shared thread
(``sync_to_async(thread_sensitive=True)``), and a single sync-only middleware
turns the whole chain synchronous. The admin and the dashboard need sessions,
CSRF, authentication and messages; the API needs none of them (it is keyed by
``Authorization``, never by cookies). So ``/v1/…``, ``/healthz``, ``/readyz``
and ``/metrics`` go through ``API_MIDDLEWARE`` (natively async only) and every
other path through ``MIDDLEWARE``. Measured: the API's request path went from
~16 thread hops to none.

The API's handler also bounds the body it reads (``HTTP_MAX_BODY_SIZE``: 413
JSON before storing any of it) and answers its own request errors as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import HttpResponse
from django.urls import set_script_prefix

from smsapi.middleware import api_error_for_exception, error_response

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


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with ``settings.API_MIDDLEWARE`` as its middleware,
    and without a thread of its own per request.

    Django wraps each request in a ``ThreadSensitiveContext``: the request's first
    thread-sensitive call (its own signal receivers, at start and end) starts a
    thread, joined when the request ends (measured: a third of the CPU of a
    /v1/send). The API's views run their store work in threads of their own
    (``AsyncAPIView``), so what is left thread-sensitive (the signal receivers,
    the schema and health views) shares Django's one sync thread instead.
    """

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """Django 5.2's ``ASGIHandler.handle`` without its two hops to the sync thread.

        Django sends ``request_started`` and closes the response (which sends
        ``request_finished``) on its sync thread, because their receivers are
        synchronous: they close the thread's old database connections. The API's
        database work never runs on that thread: its views use threads that open
        and close their own connections (``in_db_thread``, ``make_view_atomic``
        below). So ``request_started`` is not sent, and ``request_finished`` is
        sent here, where it has no connection to close (measured: +22 % req/s).
        """
        try:
            body_file = await self.read_limited_body(scope, receive)
        except RequestAborted:
            return
        except BodyTooLarge:
            # Answered before Django sees it: nothing reads a body of any size.
            await self.send_response(body_too_large(), send)
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away
                await self.send_response(response, send)
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            pass
        else:
            if response.streaming:
                # A streamed body may hold resources that close synchronously.
                await sync_to_async(response.close, thread_sensitive=False)()
            else:
                response.close()
        body_file.close()

    async def read_limited_body(self, scope, receive):
        """Django's ``read_body`` with a bound: ``BodyTooLarge`` past
        ``HTTP_MAX_BODY_SIZE`` (declared or as it arrives), before it is stored."""
        limit = settings.HTTP_MAX_BODY_SIZE
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            raise BodyTooLarge
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
        this handler does not send (see ``handle``); in the test suite the test's
        transaction must stay open, so there views are left as they are.
        """
        view = super().make_view_atomic(view)
        if iscoroutinefunction(view) or settings.STORE_ON_CALLER_THREAD:
            return view

        @functools.wraps(view)
        def with_own_connection(*args, **kwargs):
            close_old_connections()
            try:
                return view(*args, **kwargs)
            finally:
                close_old_connections()

        return with_own_connection

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads settings.MIDDLEWARE; show it the API's list while it builds
        # the chain (once, at start-up, before any request is served).
        pages_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = pages_middleware


def api_paths() -> tuple[str, ...]:
    """Path prefixes served by the API handler."""
    prefix = f"/{settings.SMSAPI_PREFIX}" if settings.SMSAPI_PREFIX else ""
    return (f"{prefix}/v1/", "/healthz", "/readyz", "/metrics")


class PathDispatcher:
    """An ASGI app that hands HTTP requests to ``api`` or ``pages`` by path."""

    def __init__(self, api, pages, api_prefixes: tuple[str, ...]):
        self.api = api
        self.pages = pages
        self.api_prefixes = api_prefixes

    async def __call__(self, scope, receive, send):
        app = self.api if scope["path"].startswith(self.api_prefixes) else self.pages
        return await app(scope, receive, send)
