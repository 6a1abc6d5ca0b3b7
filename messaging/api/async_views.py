"""DRF's APIView for ``async def`` handlers.

DRF views are synchronous, and under ASGI Django runs every synchronous view
on one shared thread: requests then queue behind each other's database round
trips (measured: ~120 requests/s for /v1/send whatever the server or the
number of processes' cores). Views built on ``AsyncAPIView`` await the store
instead, and their answer leaves as a plain ``HttpResponse`` already rendered,
so Django does not take a thread to render it either.
"""

from __future__ import annotations

import inspect

from django.http import HttpResponse
from rest_framework.views import APIView

from messaging.api.parsers import check_query_string
from messaging.api_keys import auth_required
from messaging.events import in_db_thread


class AsyncAPIView(APIView):
    """APIView served on the event loop: DRF's ``dispatch``, awaited.

    A coroutine handler is awaited; a plain one (a generic view's ``get``, which
    reads the store) runs in a thread of its own. Authentication and rate
    limits (``initial``) read the store and the cache only when API keys are
    required; then they run in a thread too.
    """

    view_is_async = True  # Django then calls ``dispatch`` as a coroutine

    async def dispatch(self, request, *args, **kwargs):  # type: ignore[override]
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            if auth_required():
                await in_db_thread(self.initial)(request, *args, **kwargs)
            else:
                self.initial(request, *args, **kwargs)
            check_query_string(request._request)  # not UTF-8: a 400, never U+FFFD
            method = request.method.lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None:
                response = self.http_method_not_allowed(request, *args, **kwargs)  # raises
            elif inspect.iscoroutinefunction(handler):
                response = await handler(request, *args, **kwargs)
            elif method == "options":
                response = handler(request, *args, **kwargs)  # no store, no waiting
            else:
                response = await in_db_thread(handler)(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        response = self.finalize_response(request, response, *args, **kwargs)
        content = response.rendered_content  # renders (once) and sets the Content-Type
        self.response = HttpResponse(content, status=response.status_code, headers=response.headers)
        return self.response
