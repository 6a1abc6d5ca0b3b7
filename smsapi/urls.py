"""URLs: the /v1 API (under SMSAPI_PREFIX when set), the dashboard and the admin."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from messaging.health import HealthView, ReadinessView
from messaging.metrics import MetricsView

prefix = f"{settings.SMSAPI_PREFIX}/" if settings.SMSAPI_PREFIX else ""

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("readyz", ReadinessView.as_view(), name="readyz"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path(prefix, include("messaging.urls")),
]
