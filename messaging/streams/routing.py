"""WebSocket routes, under ``/<SMSAPI_PREFIX>/v1/`` like the HTTP API."""

from django.conf import settings
from django.urls import path

from messaging.streams.consumers import EventsConsumer, JsonRpcConsumer

_base = f"{settings.SMSAPI_PREFIX}/v1/" if settings.SMSAPI_PREFIX else "v1/"

websocket_urlpatterns = [
    path(f"{_base}ws/jsonrpc", JsonRpcConsumer.as_asgi(), name="ws-jsonrpc"),
    path(f"{_base}ws/jsonrpc/events", EventsConsumer.as_asgi(), name="ws-jsonrpc-events"),
]
