"""Liveness and readiness: ``/healthz`` and ``/readyz`` (or ``/healthz?ready=1``).

Liveness only says that this process serves HTTP: restarting a server does not
fix a dead database or SMSC, so a liveness probe must not depend on them.
Readiness says whether the gateway can deliver now: the store answers and at
least one worker holds a bind to the SMSC and has said so recently (a worker
that was killed leaves its last state behind, so the heartbeat's age is what
counts, not the state alone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import LinkStatus
from .openapi import health_schema, readiness_schema

logger = logging.getLogger(__name__)

BOUND = "bound"  # the LinkStatus state of a worker that holds a bind


def heartbeat_max_age() -> float:
    """Seconds after which a worker's last word no longer counts (see settings)."""
    return float(getattr(settings, "HEALTH_HEARTBEAT_MAX_AGE", 15.0))


@dataclass
class Readiness:
    """The outcome of the readiness checks, each named with its verdict."""

    checks: dict[str, str] = field(default_factory=dict)
    error: str = ""
    bound_workers: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.error

    def as_body(self) -> dict:
        body: dict = {"status": "ok" if self.ready else "unavailable", "checks": self.checks}
        if self.bound_workers:
            body["bound_workers"] = self.bound_workers
        if self.error:
            body["error"] = self.error
        return body


def check_readiness() -> Readiness:
    """Ask the store, then look for a worker bound with a fresh heartbeat."""
    result = Readiness()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        logger.warning("readiness: the database does not answer", exc_info=True)
        result.checks = {"database": "failed", "smpp": "unknown"}
        result.error = "the message store does not answer"
        return result
    result.checks["database"] = "ok"

    fresh_since = timezone.now() - timedelta(seconds=heartbeat_max_age())
    try:
        links = list(LinkStatus.objects.order_by("-heartbeat_at")[:50])
    except DatabaseError:
        logger.warning("readiness: could not read the link status", exc_info=True)
        result.checks["smpp"] = "unknown"
        result.error = "the link status could not be read"
        return result
    result.bound_workers = [
        link.worker_id for link in links if link.state == BOUND and link.heartbeat_at >= fresh_since
    ]
    if result.bound_workers:
        result.checks["smpp"] = "ok"
        return result
    result.checks["smpp"] = "failed"
    if not links:
        result.error = "no SMPP worker has reported; is smpp_worker running?"
    elif links[0].heartbeat_at < fresh_since:
        result.error = (
            f"no SMPP worker has reported for {heartbeat_max_age():g} s "
            f"(last: {links[0].worker_id}, {links[0].state})"
        )
    else:
        latest = links[0]
        detail = f": {latest.detail}" if latest.detail else ""
        result.error = (
            f"no SMPP worker is bound (worker {latest.worker_id} is {latest.state}{detail})"
        )
    return result


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


def readiness_response() -> Response:
    result = check_readiness()
    return _no_store(Response(result.as_body(), status=200 if result.ready else 503))


@health_schema
class HealthView(APIView):
    """GET /healthz: 200 while this process serves; ``?ready=1`` asks for readiness."""

    def get(self, request: Request) -> Response:
        if request.query_params.get("ready", "").lower() in ("1", "true", "yes", "on"):
            return readiness_response()
        return _no_store(Response({"status": "ok"}))


@readiness_schema
class ReadinessView(APIView):
    """GET /readyz: 200 when the store answers and a worker is bound; 503 otherwise."""

    def get(self, request: Request) -> Response:
        return readiness_response()
