"""Middleware of our own, natively async so the API's chain stays off threads."""

from __future__ import annotations

from django.utils.decorators import async_only_middleware


@async_only_middleware
def nosniff(get_response):
    """``X-Content-Type-Options: nosniff`` on every API answer (what Django's
    SecurityMiddleware adds to pages) without its two thread hops per request."""

    async def middleware(request):
        response = await get_response(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return middleware
