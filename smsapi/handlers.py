"""Two Django ASGI handlers: a lean one for the API, the full one for pages.

Django runs each ``MiddlewareMixin`` middleware's hooks on one shared thread
(``sync_to_async(thread_sensitive=True)``), and a single sync-only middleware
turns the whole chain synchronous. The admin and the dashboard need sessions,
CSRF, authentication and messages; the API needs none of them (it is keyed by
``Authorization``, never by cookies). So ``/v1/…``, ``/healthz``, ``/readyz``
and ``/metrics`` go through ``API_MIDDLEWARE`` (natively async only) and every
other path through ``MIDDLEWARE``. Measured: the API's request path went from
~16 thread hops to none.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


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
