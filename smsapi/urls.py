"""URLs: the /v1 API (under SMSAPI_PREFIX when set), the dashboard and the admin."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

prefix = f"{settings.SMSAPI_PREFIX}/" if settings.SMSAPI_PREFIX else ""

urlpatterns = [
    path("admin/", admin.site.urls),
    path(prefix, include("messaging.urls")),
]
