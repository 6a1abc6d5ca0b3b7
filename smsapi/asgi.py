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

# WebSockets take any Origin for now: the demo set-up allows all origins (see api.md, CORS).
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
