"""GET /v1/status: the SMPP link of each worker and the message counts, for the dashboard."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from . import api_keys
from .authentication import request_api_key, unauthorized
from .events import last_event_id
from .models import ApiKey, LinkStatus, Message


def link_status(api_key: ApiKey | None = None, counts: bool = True) -> dict:
    """What the dashboard shows in its header: links, counts per state, last event id.

    The counts are of ``api_key``'s messages when given, of all otherwise; none
    with ``counts=False``.
    """
    links = [
        {
            "worker_id": row.worker_id,
            "state": row.state,
            "detail": row.detail,
            "smsc": row.smsc,
            "changed_at": row.changed_at.isoformat(),
            "heartbeat_at": row.heartbeat_at.isoformat(),
        }
        for row in LinkStatus.objects.order_by("worker_id")
    ]
    messages = Message.objects.order_by()
    if api_key is not None:
        messages = messages.filter(api_key=api_key)
    by_state = (
        dict(messages.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        if counts
        else {}
    )
    return {"link": links, "counts": by_state, "last_event_id": last_event_id()}


@require_GET
def status_view(request: HttpRequest) -> JsonResponse:
    """GET /v1/status

    The link state is public, like /healthz. With SMSAPI_AUTH=required the
    message counts are the key's own, and only given when a key is sent.
    """
    anonymous = api_keys.auth_required() and not (
        request.headers.get("Authorization") or request.GET.get("api_key")
    )
    if anonymous:
        status = link_status(counts=False)
    else:
        try:
            status = link_status(request_api_key(request))
        except api_keys.KeyRejected as exc:
            return unauthorized(str(exc))
    response = JsonResponse(status)
    response["Cache-Control"] = "no-store"
    return response
