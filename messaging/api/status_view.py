"""GET /v1/status: the SMPP link of each worker and the message counts, for the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.views import APIView

from messaging import api_keys
from messaging.api.authentication import is_staff_session, request_api_key, unauthorized
from messaging.api.openapi import status_schema
from messaging.events import last_event_id
from messaging.health import LinkHealth, heartbeat_max_age
from messaging.models import ApiKey, LinkStatus, Message
from messaging.routing import public_name

STOPPED = "stopped"  # the LinkStatus state of a worker that stopped cleanly


def live_links(rows: Iterable[LinkStatus], now: datetime | None = None) -> list[LinkStatus]:
    """The links worth showing: a cleanly stopped worker does not count against the total.

    A ``stopped`` link is left out once any other worker has reported (the one
    that replaced it after a restart), and once it is older than the heartbeat's
    age limit: "stopped" is news for a moment after a full stop, then not.
    """
    rows = list(rows)
    if any(row.state != STOPPED for row in rows):
        return [row for row in rows if row.state != STOPPED]
    recent = (now or timezone.now()) - timedelta(seconds=heartbeat_max_age())
    return [row for row in rows if row.changed_at >= recent]


def link_status(api_key: ApiKey | None = None, counts: bool = True, details: bool = True) -> dict:
    """What the dashboard shows in its header: links, counts per state, last event id.

    The counts are of ``api_key``'s messages when given, of all otherwise; none
    with ``counts=False``. With ``details=False`` each link says only its state
    (no worker id, SMSC address, system_id or bind detail).
    """
    rows = live_links(LinkStatus.objects.order_by("worker_id"))
    if details:
        links = []
        for row in rows:
            health = LinkHealth.from_stored(row.health)
            links.append(
                {
                    "worker_id": row.worker_id,
                    "connector": public_name(row.connector),
                    "bind": row.bind_index,
                    "state": row.state,
                    "detail": row.detail,
                    "smsc": row.smsc,
                    "changed_at": row.changed_at.isoformat(),
                    "heartbeat_at": row.heartbeat_at.isoformat(),
                    # How the SMSC treats the worker's submits (messaging.health.LinkHealth).
                    "health": health.as_dict() if health is not None else None,
                }
            )
    else:
        links = [{"state": row.state} for row in rows]
    messages = Message.objects.order_by()
    if api_key is not None:
        messages = messages.filter(api_key=api_key)
    by_state = (
        dict(messages.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        if counts
        else {}
    )
    return {"link": links, "counts": by_state, "last_event_id": last_event_id()}


@status_schema
class StatusView(APIView):
    """GET /v1/status (a DRF view for its OpenAPI description; no DRF auth applies)."""

    def get(self, request: Request) -> HttpResponse:
        return status_answer(request._request)


def status_answer(request: HttpRequest) -> JsonResponse:
    """GET /v1/status

    The state of each link is public, like /healthz. With SMSAPI_AUTH=required
    the link details (worker, SMSC address, system_id, bind detail) go only to
    a valid key or a logged-in staff user of the admin, and the message counts
    only to a key (its own messages).
    """
    anonymous = api_keys.auth_required() and not (
        request.headers.get("Authorization") or request.GET.get("api_key")
    )
    if anonymous:
        status = link_status(counts=False, details=is_staff_session(request))
    else:
        try:
            status = link_status(request_api_key(request))
        except api_keys.KeyRejected as exc:
            return unauthorized(str(exc))
    response = JsonResponse(status)
    response["Cache-Control"] = "no-store"
    return response


status_view = StatusView.as_view()
