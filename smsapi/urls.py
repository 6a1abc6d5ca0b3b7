"""URLs: the /v1 API (under SMSAPI_PREFIX when set), the dashboard and the admin.

The error handlers answer JSON ``{"error": ...}`` on the API's paths (see
``smsapi.middleware``) and Django's own pages everywhere else.
"""

import sys

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views import defaults

from messaging.api.dashboard import favicon
from messaging.api.health import HealthView, ReadinessView
from messaging.api.metrics import MetricsView
from messaging.streams.sse import sse_view
from smsapi.middleware import api_error_for_exception, api_paths, error_response

prefix = f"{settings.SMSAPI_PREFIX}/" if settings.SMSAPI_PREFIX else ""

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("readyz", ReadinessView.as_view(), name="readyz"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    path(f"{prefix}v1/sse", sse_view, name="sse"),  # the event stream (messaging.streams)
    path(prefix, include("messaging.api.urls")),
]


def _is_api(request) -> bool:
    return request.path.startswith(api_paths())


def handler400(request, exception=None):
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    answer = api_error_for_exception(exception) if exception is not None else None
    return answer or error_response(400, "bad request")


def handler403(request, exception=None):
    if not _is_api(request):
        return defaults.permission_denied(request, exception)
    return error_response(403, "forbidden")


def handler404(request, exception=None):
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return error_response(404, f"no such endpoint: {request.path[:200]}")


def handler500(request):
    """An exception no view handled: logged with its traceback by Django
    (``django.request``) before this runs; the client gets no stack."""
    if not _is_api(request):
        return defaults.server_error(request)
    exception = sys.exc_info()[1]  # asgiref re-raises it in the handler's thread
    answer = api_error_for_exception(exception) if exception is not None else None
    return answer or error_response(500, "internal error (logged on the server)")
