"""GET /v1/status: the SMPP link of each worker and the message counts, for the dashboard."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from .events import last_event_id
from .models import LinkStatus, Message


def link_status() -> dict:
    """What the dashboard shows in its header: links, counts per state, last event id."""
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
    counts = dict(
        Message.objects.order_by()
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    return {"link": links, "counts": counts, "last_event_id": last_event_id()}


@require_GET
def status_view(request: HttpRequest) -> JsonResponse:
    """GET /v1/status"""
    response = JsonResponse(link_status())
    response["Cache-Control"] = "no-store"
    return response
