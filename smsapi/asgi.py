"""The ASGI application: Django for HTTP, Channels for the WebSocket APIs.

Static files (the dashboard's JS and CSS) are served by WhiteNoise's middleware
from STATICFILES_DIRS, so daphne needs no web server in front and no collectstatic.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsapi.settings")

# Set Django up (apps, models) before anything imports a consumer.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from messaging.routing import websocket_urlpatterns  # noqa: E402
from messaging.ws_auth import ApiKeyMiddleware  # noqa: E402

# WebSockets take any Origin: they carry no cookie, only an API key (when
# SMSAPI_AUTH=required), which the middleware checks before a consumer runs.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": ApiKeyMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
