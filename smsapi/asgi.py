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


def limit_statement_time(database: dict, seconds: float) -> bool:
    """Give the server's PostgreSQL sessions a ``statement_timeout`` of ``seconds``.

    Only server processes import this module, so the worker, the webhook sender
    and ``migrate`` keep no timeout. Sent in libpq's startup ``options``: no round
    trip per connection. Must run before the first connection (the pool is built
    from these options then). False when not PostgreSQL or ``seconds`` is 0.
    """
    if seconds <= 0 or not database.get("ENGINE", "").endswith("postgresql"):
        return False
    options = database.setdefault("OPTIONS", {})
    flag = f"-c statement_timeout={round(seconds * 1000)}"
    if flag not in options.get("options", ""):
        options["options"] = f"{options.get('options', '')} {flag}".strip()
    return True


# Set Django up (apps, models) before anything imports a consumer.
pages_app = get_asgi_application()

from django.conf import settings  # noqa: E402

limit_statement_time(settings.DATABASES["default"], settings.DB_STATEMENT_TIMEOUT)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from messaging.streams.routing import websocket_urlpatterns  # noqa: E402
from messaging.streams.transport_flow import StreamSendMiddleware  # noqa: E402
from messaging.streams.ws_auth import ApiKeyMiddleware  # noqa: E402
from smsapi.daphne_requests import (  # noqa: E402
    bound_request_bodies,
    redact_access_log,
    skip_twisted_form_parsing,
)
from smsapi.gc_tuning import tune_garbage_collector  # noqa: E402
from smsapi.handlers import ApiASGIHandler, PathDispatcher  # noqa: E402
from smsapi.middleware import WebSocketGuard, api_paths  # noqa: E402

# WebSockets carry no cookie, only an API key (when SMSAPI_AUTH=required), which
# ApiKeyMiddleware checks before a consumer runs; WebSocketGuard first refuses a
# Host not in ALLOWED_HOSTS and, without keys, another web site's Origin.
application = ProtocolTypeRouter(
    {
        # StreamSendMiddleware: back-pressure for /v1/sse (messaging/streams/transport_flow.py).
        "http": StreamSendMiddleware(PathDispatcher(ApiASGIHandler(), pages_app, api_paths())),
        "websocket": WebSocketGuard(ApiKeyMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
skip_twisted_form_parsing()
redact_access_log()
bound_request_bodies()
tune_garbage_collector()
