"""Every API error is ``{"error": "<one clear sentence>"}``, as the old server answered."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework.exceptions import ParseError
from rest_framework.views import exception_handler as drf_exception_handler

from messaging.api.parsers import PayloadTooLarge

# What a client is told while the database is down, locked or too slow (a 503).
STORE_UNAVAILABLE = "the message store is unavailable; try again"


def first_error(detail, field: str | None = None) -> str:
    """The first message in a DRF error structure, named after its field.

    Serializer fields are declared in validation order, so the first error is
    the one the old server would have reported.
    """
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = None if key == "non_field_errors" else key
            return first_error(value, name)
        return "invalid request"
    if isinstance(detail, list):
        return first_error(detail[0], field) if detail else "invalid request"
    text = str(detail)
    if field and not text.startswith(("missing parameter", "invalid parameter")):
        text = f'invalid parameter "{field}": {text}'
    return text


def exception_handler(exc, context):
    """DRF's handler with every answer as ``{"error": ...}``, and Django's own
    refusals of a request body (DRF reads ``request.body`` for JSON and forms,
    where Django checks its limits) answered here too, not as a 500."""
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
            "(DATA_UPLOAD_MAX_MEMORY_SIZE)"
        )
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = ParseError("too many fields in the request")
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = {"error": first_error(response.data.get("detail", response.data))}
    return response
