"""Every API error is ``{"error": "<one clear sentence>"}``, as the old server answered."""

from __future__ import annotations

from rest_framework.views import exception_handler as drf_exception_handler


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
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = {"error": first_error(response.data.get("detail", response.data))}
    return response
