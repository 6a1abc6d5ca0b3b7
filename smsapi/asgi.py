"""The ASGI application: Django for HTTP (static files included), Channels for WebSockets.

Static files are served from STATICFILES_DIRS by Django's static files handler,
so the dashboard works under daphne without collectstatic or a web server in front.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsapi.settings")

# Set Django up (apps, models) before anything imports a consumer.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from messaging.routing import websocket_urlpatterns  # noqa: E402

# WebSockets take any Origin for now: the demo set-up allows all origins (see api.md, CORS).
application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
