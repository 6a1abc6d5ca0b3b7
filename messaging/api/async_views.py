"""The API's views are served on the event loop (``upstream.drf.AwaitedAPIView``).

DRF views are synchronous, and under ASGI Django runs every synchronous view
on one shared thread: requests then queue behind each other's database round
trips (measured: ~120 requests/s for /v1/send whatever the server or the
number of processes' cores). Views built on ``AsyncAPIView`` await the store
instead, and their answer leaves already rendered, so Django does not take a
thread to render it either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from messaging.api.parsers import check_query_string
from messaging.api_keys import auth_required
from messaging.orm_thread import in_db_thread
from upstream.drf import AwaitedAPIView


class AsyncAPIView(AwaitedAPIView):
    """An APIView served on the event loop.

    A coroutine handler is awaited; a plain one (a generic view's ``get``, which
    reads the store) runs in a thread of its own (``in_db_thread``).
    Authentication and rate limits (``initial``) read the store and the cache
    only when API keys are required; then they run in a thread too.
    """

    def run_sync(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        return in_db_thread(func)

    def initial_runs_on_loop(self) -> bool:
        return not auth_required()

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        check_query_string(request._request)  # not UTF-8: a 400, never U+FFFD
