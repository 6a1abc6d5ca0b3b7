"""The ASGI application: Django for HTTP, Channels for the WebSocket APIs.

HTTP goes to one of two Django handlers by path (``smsapi.handlers``): the API
through a lean, fully async middleware chain, the admin and the dashboard
through the full one. Static files (the dashboard's JS and CSS) are served by
WhiteNoise's middleware in the full chain, so daphne needs no web server in
front and no collectstatic.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsapi.settings")

# Set Django up (apps, models) before anything imports a consumer.
pages_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from messaging.routing import websocket_urlpatterns  # noqa: E402
from messaging.ws_auth import ApiKeyMiddleware  # noqa: E402
from smsapi.daphne_requests import (  # noqa: E402
    skip_twisted_access_log,
    skip_twisted_form_parsing,
)
from smsapi.gc_tuning import tune_garbage_collector  # noqa: E402
from smsapi.handlers import ApiASGIHandler, PathDispatcher, api_paths  # noqa: E402

# WebSockets take any Origin: they carry no cookie, only an API key (when
# SMSAPI_AUTH=required), which the middleware checks before a consumer runs.
application = ProtocolTypeRouter(
    {
        "http": PathDispatcher(ApiASGIHandler(), pages_app, api_paths()),
        "websocket": ApiKeyMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
skip_twisted_form_parsing()
skip_twisted_access_log()
tune_garbage_collector()
