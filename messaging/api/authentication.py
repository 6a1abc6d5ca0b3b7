"""API keys on the HTTP side: the DRF authentication class and its plain-Django twin.

The key is the principal: an authenticated request has ``request.auth`` set to
its ``ApiKey`` (and no Django user). With ``SMSAPI_AUTH=off`` nothing is asked
for and ``request.auth`` stays None, which the views read as "see everything".
Every refusal is a 401 ``{"error": "..."}`` with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest, JsonResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from messaging import api_keys
from messaging.api.throttling import ApiKeyRateThrottle
from messaging.models import ApiKey

WWW_AUTHENTICATE = 'Bearer realm="smsapi"'
QUERY_PARAMETER = "api_key"  # for clients that cannot set headers (EventSource, WebSocket)


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <key>`` (or ``?api_key=<key>``), when SMSAPI_AUTH=required."""

    def authenticate(self, request: Request) -> tuple[None, ApiKey] | None:
        try:
            api_key = api_keys.authenticate(
                request.headers.get("Authorization"), request.query_params.get(QUERY_PARAMETER)
            )
        except api_keys.KeyRejected as exc:
            raise AuthenticationFailed(str(exc)) from exc
        return None if api_key is None else (None, api_key)

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class ApiKeyProtected:
    """Mixin for the /v1 API views: a key when required, and its rate limit."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []
    throttle_classes = [ApiKeyRateThrottle]


def request_api_key(request: HttpRequest) -> ApiKey | None:
    """The key of a plain Django request (the SSE stream, /v1/status); KeyRejected
    when one is required and missing, wrong or revoked. Synchronous (the ORM)."""
    return api_keys.authenticate(
        request.headers.get("Authorization"), request.GET.get(QUERY_PARAMETER)
    )


def staff_session_user(request: HttpRequest | Request):
    """The active staff user whose admin session the request carries, or None.

    The API's middleware chain has no sessions (smsapi/handlers.py), so the
    session cookie is read here; only for a request without a key that sends one.
    Never for a write: the API has no CSRF check, so a cookie alone must not change
    anything (``StaffSessionReads``).
    """
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    return user if user.is_active and user.is_staff else None


def is_staff_session(request: HttpRequest) -> bool:
    """Whether the request carries the admin session of an active staff user."""
    return staff_session_user(request) is not None


class StaffSessionReads(BaseAuthentication):
    """A staff user's admin session, for reading only (GET, HEAD, OPTIONS)."""

    def authenticate(self, request: Request):
        if request.method not in SAFE_METHODS:
            return None
        user = staff_session_user(request)  # DRF's Request passes COOKIES through
        return None if user is None else (user, None)


def unauthorized(error: str) -> JsonResponse:
    """The 401 a plain Django view answers, shaped like DRF's."""
    response = JsonResponse({"error": error}, status=401)
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the key (drf-spectacular finds it by subclassing)."""

    target_class = "messaging.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "An API key (sk_...) as `Authorization: Bearer <key>`, or `?api_key=<key>` "
                "for clients that cannot set headers. Only asked for when SMSAPI_AUTH=required."
            ),
        }
