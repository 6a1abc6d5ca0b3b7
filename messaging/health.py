"""Liveness and readiness: ``/healthz`` and ``/readyz`` (or ``/healthz?ready=1``).

Liveness only says that this process serves HTTP: restarting a server does not
fix a dead database or SMSC, so a liveness probe must not depend on them.
Readiness says whether the gateway can deliver now: the store answers, at
least one worker holds a bind to an SMSC and has said so recently (a worker
that was killed leaves its last state behind, so the heartbeat's age is what
counts, not the state alone), and every route has a connector with a bound
link (``messaging.connectors.unserved_routes``; the check names those that have none).

Readiness answers within a second whatever the store does: the store's checks
run on a thread of their own and the answer is 503 after ``READINESS_TIMEOUT``
(0.8 s) if they have not finished; a check still hanging is shared by the
probes that follow, so a dead database costs one thread, not one per probe.
A process whose long-lived task died (``messaging.supervision``) answers 503
at once, without asking the store. Liveness never touches the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from messaging.models import LinkStatus
from messaging.orm_thread import DatabaseThread
from messaging.supervision import not_ready_reason

logger = logging.getLogger(__name__)

BOUND = "bound"  # the LinkStatus state of a worker that holds a bind
# Bound, but the SMSC has refused every submit for SMPP_STALL_REBIND_AFTER seconds:
# not ready (the worker rebinds).
STALLED = "stalled"


@dataclass(frozen=True)
class LinkHealth:
    """How the SMSC treats a worker's submits, as the worker last reported it.

    Stored in ``LinkStatus.health`` by the update the heartbeat makes anyway (no
    round trip more), and read back by ``from_stored`` as any row is: untrusted.
    """

    throttled: int = 0  # submits answered ESME_RTHROTTLED (0x58) since the worker started
    queue_full: int = 0  # answered ESME_RMSGQFUL (0x14)
    refused: int = 0  # other "not now" answers (0x08, 0x64) and submits never answered
    rate: float = 0.0  # submit_sm a second the worker allows itself now; 0: no limit
    sent: float = 0.0  # submit_sm a second actually sent, over the last second
    refusing_for: float = 0.0  # seconds every submit has been refused (0: not refusing)
    bells_dropped: int = 0  # notifications dropped on a full channel (the store has them)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_stored(cls, stored: object) -> LinkHealth | None:
        """The figures of a ``LinkStatus.health`` value, or None when it holds none.

        A row read back is not trusted: unknown keys are left out, and a value that
        is not a finite number of the field's kind counts as absent.
        """
        if not isinstance(stored, dict):
            return None
        values: dict = {}
        for name, kind in _FIELD_TYPES.items():
            value = stored.get(name)
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if is_number and math.isfinite(value):
                values[name] = int(value) if kind == "int" else float(value)
        return cls(**values)


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(LinkHealth)}


def heartbeat_max_age() -> float:
    """Seconds after which a worker's last word no longer counts (see settings)."""
    return float(getattr(settings, "HEALTH_HEARTBEAT_MAX_AGE", 15.0))


def fresh_since() -> datetime:
    """Heartbeats older than this no longer count (``heartbeat_max_age``)."""
    return timezone.now() - timedelta(seconds=heartbeat_max_age())


def any_worker_bound() -> bool:
    """Whether some worker holds a bind and has said so recently (one indexed read).

    The same rule as readiness's "smpp" check; for ``/v1/send``, which asks it
    at most once a second per process (``messaging.api.smsc_answers.LinkWatch``).
    """
    return LinkStatus.objects.filter(state=BOUND, heartbeat_at__gte=fresh_since()).exists()


def bound_connectors() -> set[str]:
    """Connectors with a link bound now (a recent heartbeat; a stalled link is not)."""
    links = LinkStatus.objects.filter(state=BOUND, heartbeat_at__gte=fresh_since())
    return set(links.values_list("connector", flat=True))


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


def process_failure() -> Readiness | None:
    """Not ready, without asking the store, when a task of this process died."""
    reason = not_ready_reason()
    if reason is None:
        return None
    return Readiness(checks={"process": "failed"}, error=reason)


def check_readiness() -> Readiness:
    """Ask the store, then look for a worker bound with a fresh heartbeat."""
    failed = process_failure()
    if failed is not None:
        return failed
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

    fresh = fresh_since()
    try:
        links = list(LinkStatus.objects.order_by("-heartbeat_at")[:50])
    except DatabaseError:
        logger.warning("readiness: could not read the link status", exc_info=True)
        result.checks["smpp"] = "unknown"
        result.error = "the link status could not be read"
        return result
    result.bound_workers = [
        link.worker_id for link in links if link.state == BOUND and link.heartbeat_at >= fresh
    ]
    if result.bound_workers:
        result.checks["smpp"] = "ok"
        return _check_routes(result)
    result.checks["smpp"] = "failed"
    if not links:
        result.error = "no SMPP worker has reported; is smpp_worker running?"
    elif links[0].heartbeat_at < fresh:
        result.error = (
            f"no SMPP worker has reported for {heartbeat_max_age():g} s "
            f"(last: {links[0].worker_id}, {links[0].state})"
        )
    else:
        latest = links[0]
        detail = f": {latest.detail}" if latest.detail else ""
        if latest.state == STALLED:
            result.checks["smpp"] = STALLED
        result.error = (
            f"no SMPP worker is bound (worker {latest.worker_id} is {latest.state}{detail})"
        )
    return result


def _check_routes(result: Readiness) -> Readiness:
    """Ready only when every route has a bound connector; say which have none."""
    # Imported here: the routing rules read the link state this module defines.
    from messaging.connectors import unserved_routes

    try:
        unserved = unserved_routes(bound_connectors())
    except DatabaseError:
        logger.warning("readiness: could not read the routes", exc_info=True)
        result.checks["routes"] = "unknown"
        result.error = "the routes could not be read"
        return result
    if unserved:
        result.checks["routes"] = "failed"
        result.error = f"no connector bound for route(s): {', '.join(unserved)}"
    else:
        result.checks["routes"] = "ok"
    return result


def readiness_timeout() -> float:
    """Seconds /readyz waits for the store's checks (see settings)."""
    return float(getattr(settings, "READINESS_TIMEOUT", 0.8))


# One thread for the store's checks: a probe never waits for a shared thread, and
# a store that hangs holds this one thread (and its one connection), no more. A
# connection per check: each proves the store gives one now, and none is held
# between probes.
_thread = DatabaseThread("readiness", per_call_connection=True)
_lock = threading.Lock()
_running: Future | None = None


def _shared_check() -> Future:
    """The check under way, or a new one: probes during a hang share it."""
    global _running
    with _lock:
        if _running is None or _running.done():
            _running = _thread.submit(check_readiness)
        return _running


async def bounded_readiness(timeout: float | None = None) -> Readiness:
    """``check_readiness``, answered within ``timeout`` seconds whatever the store does."""
    failed = process_failure()
    if failed is not None:
        return failed
    timeout = readiness_timeout() if timeout is None else timeout
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_shared_check())), timeout)
    except TimeoutError:
        logger.warning("readiness: the database did not answer within %g s", timeout)
        return Readiness(
            checks={"database": "failed", "smpp": "unknown"},
            error=f"the message store did not answer within {timeout:g} s",
        )
    except Exception:  # a bug, or a store error of an unexpected kind: not ready, said why
        logger.exception("readiness: the check failed")
        return Readiness(
            checks={"database": "failed", "smpp": "unknown"},
            error="the readiness check failed (see the server's log)",
        )
