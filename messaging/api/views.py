"""The /v1 HTTP API: thin views over ``messaging.api.sending`` and the store."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Prefetch
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from messaging.api import openapi, querying, sending
from messaging.api.answers import ApiAnswer
from messaging.api.async_views import AsyncAPIView
from messaging.api.authentication import QUERY_PARAMETER, ApiKeyProtected
from messaging.api.send_times import InvalidTime, filter_moment
from messaging.api.serializers import MessageDetailSerializer, MessageSerializer, shown
from messaging.models import Message, MessagePart, Receipt
from messaging.states import State


def request_params(request: Request) -> dict:
    """Query string, then the body on top (form, multipart or JSON), like Go's FormValue."""
    params = {
        key: request.query_params.get(key)
        for key in request.query_params
        if key != QUERY_PARAMETER  # the API key is no message parameter
    }
    data = request.data
    if hasattr(data, "getlist"):
        params.update({key: data.get(key) for key in data})
    elif isinstance(data, dict):
        params.update(data)
    elif data not in (None, ""):  # JSON, but an array, a string or a number
        raise ValidationError({"body": "a JSON object of parameters expected"})
    # Empty means absent.
    return {k: v for k, v in params.items() if v is not None and v != ""}


def as_response(answer: ApiAnswer) -> Response:
    return Response(answer.body, status=answer.status)


@openapi.send_schema
class SendView(ApiKeyProtected, AsyncAPIView):
    """POST|PUT /v1/send"""

    async def post(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key") or None
        return as_response(
            await sending.send(request_params(request), idempotency_key=key, api_key=request.auth)
        )

    put = post


@openapi.send_batch_schema
class SendBatchView(ApiKeyProtected, AsyncAPIView):
    """POST /v1/send/batch: a JSON array of send objects, answered per item."""

    def post(self, request: Request) -> Response:  # in a thread: it validates 1,000 items
        key = request.headers.get("Idempotency-Key") or None
        return as_response(
            sending.send_batch(request.data, idempotency_key=key, api_key=request.auth)
        )


@openapi.query_schema
class QueryView(ApiKeyProtected, AsyncAPIView):
    """GET|HEAD /v1/query"""

    def get(self, request: Request) -> Response:
        return as_response(querying.query(request_params(request), api_key=request.auth))


class MessagePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _messages(request: Request):
    """The messages this request may see: its key's own (all when authentication is off)."""
    messages = Message.objects.prefetch_related(
        Prefetch("parts", queryset=MessagePart.objects.order_by("index"))
    )
    if request.auth is not None:
        messages = messages.filter(api_key=request.auth)
    return messages


@openapi.message_list_schema
class MessageListView(ApiKeyProtected, AsyncAPIView, generics.ListAPIView):
    """GET /v1/messages?status=&dst=&reference=&since=&until="""

    serializer_class = MessageSerializer
    pagination_class = MessagePagination

    def get_queryset(self):
        params = {key: value for key, value in self.request.query_params.items() if value}
        for name, value in params.items():
            if "\x00" in value:
                raise ValidationError({name: f'invalid parameter "{name}": NUL character'})
        messages = _messages(self.request).order_by("-id")
        if "status" in params:
            messages = messages.filter(state__in=_states(params["status"]))
        if "dst" in params:
            messages = messages.filter(dst=params["dst"])
        if "reference" in params:
            messages = messages.filter(reference=params["reference"])
        for name, lookup in (("since", "created_at__gte"), ("until", "created_at__lt")):
            if name in params:
                messages = messages.filter(**{lookup: _moment(name, params[name])})
        return messages


def _states(value: str) -> list[str]:
    """The states of a ``status`` filter, or a 400 naming one that is none."""
    states = [s.strip() for s in value.split(",") if s.strip()]
    for state in states:
        if state not in State.values:
            raise ValidationError(
                {
                    "status": f'invalid parameter "status"="{shown(state)}"; '
                    f"supported: {', '.join(State.values)}"
                }
            )
    return states


def _moment(name: str, value: str) -> datetime:
    """An ISO 8601 date or time from a filter parameter, or a 400."""
    try:
        return filter_moment(value, name)
    except InvalidTime as exc:
        raise ValidationError({name: str(exc)}) from None


@openapi.message_detail_schema
class MessageDetailView(ApiKeyProtected, AsyncAPIView, generics.RetrieveAPIView):
    """GET /v1/messages/<id>: parts, SMSC ids, receipts and the timeline."""

    serializer_class = MessageDetailSerializer

    def get_queryset(self):
        return _messages(self.request).prefetch_related(
            "transitions", Prefetch("receipts", queryset=Receipt.objects.select_related("part"))
        )

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        if response.status_code == status.HTTP_404_NOT_FOUND:
            response.data = {"error": f'message "{self.kwargs.get("pk")}" not found'}
        return response
