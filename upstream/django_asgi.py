"""Django's ASGI handler without its per-request thread and request signals.

Two reaches into ``django.core.handlers``, written for Django 5.2 and
checked by tests/test_upstream_django_asgi.py:

- ``ASGIHandlerWithoutRequestSignals``: Django's ``ASGIHandler.__call__``
  wraps each request in a ``ThreadSensitiveContext`` (its first
  thread-sensitive call starts a thread, joined when the request ends), and
  ``handle`` sends ``request_started`` and closes the response on Django's
  sync thread, because their receivers are synchronous (they close that
  thread's old database connections). A handler whose views never use that
  thread's connections (they run their store work in threads of their own)
  pays two thread hops per request for nothing. This class is ``handle``
  copied from Django 5.2 without them. Measured in-process (/v1/send, a dry
  run, 20 concurrent, 3 interleaved rounds of 2,000): 366 µs of CPU and
  538 µs wall per request with it, 913 µs and 1,480 µs with Django's own.
- ``load_middleware_from``: Django builds a handler's chain from the global
  ``settings.MIDDLEWARE`` only; this builds one from another list by showing
  ``BaseHandler.load_middleware`` that list while it runs (once, at start-up).

On another Django both log a warning (``upstream.written_for``) and do what
Django does: the request signals are sent, in a ``ThreadSensitiveContext``;
the middleware list is still swapped (Django has no public way to give one
handler its own chain), which the warning says.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix

from upstream import written_for

DJANGO_VERSIONS = ("5.2",)
SKIPS_SIGNALS = "a copy of ASGIHandler.handle without request_started (upstream.django_asgi)"
SWAPS_MIDDLEWARE = "a settings.MIDDLEWARE swap in load_middleware (upstream.django_asgi)"

_swap_lock = threading.Lock()


def skips_request_signals() -> bool:
    """True on the Django versions whose ``handle`` the copy below was taken from."""
    return written_for("django", *DJANGO_VERSIONS, what=SKIPS_SIGNALS)


class ASGIHandlerWithoutRequestSignals(ASGIHandler):
    """Django's ``ASGIHandler`` without a ``ThreadSensitiveContext`` per request
    and without ``request_started`` (see the module's docstring).

    Only for views that keep off Django's sync thread's database connection.
    ``read_body`` and ``create_request`` are called as Django calls them, so a
    subclass's overrides apply on both paths.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skips_request_signals = skips_request_signals()

    async def __call__(self, scope, receive, send):
        if not self.skips_request_signals:
            return await super().__call__(scope, receive, send)
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """Django 5.2's ``handle`` but for the marked lines (over 60 lines: a copy,
        kept line for line so that it can be compared with Django's)."""
        if not self.skips_request_signals:
            return await super().handle(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        # Left out: ``await signals.request_started.asend(...)``.
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()  # changed: on the event loop (a JSON answer)
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
            # Changed: Django closes every response on its sync thread; only a
            # streamed body may hold resources that close synchronously.
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=False)()
            else:
                response.close()  # sends request_finished, here on the event loop
        body_file.close()


def load_middleware_from(
    handler: ASGIHandler, middleware: Sequence[str], is_async: bool = False
) -> None:
    """Build ``handler``'s chain from ``middleware`` instead of ``settings.MIDDLEWARE``.

    Django's ``BaseHandler.load_middleware`` reads the global setting; it is shown
    ``middleware`` while it runs, under a lock, and restored after. Call it at
    start-up, before requests are served (another thread reading
    ``settings.MIDDLEWARE`` meanwhile would see the swapped list).
    """
    written_for("django", *DJANGO_VERSIONS, what=SWAPS_MIDDLEWARE)  # warns; no fallback
    with _swap_lock:
        pages_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = list(middleware)
        try:
            ASGIHandler.load_middleware(handler, is_async)
        finally:
            settings.MIDDLEWARE = pages_middleware
