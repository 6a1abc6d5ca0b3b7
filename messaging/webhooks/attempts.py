"""Claiming due webhook deliveries and recording what their POSTs came to
(steps 2 and the end of 3 of ``messaging.webhooks.delivery``).

A claim leases each delivery by pushing its ``next_attempt_at`` past the
longest a POST can take, so a sender that dies mid-POST leaves it to be tried
again (at least once); every attempt is kept, and a failure is tried again
after ``WEBHOOK_BACKOFF`` until ``WEBHOOK_MAX_ATTEMPTS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging.events import event_json
from messaging.models import WebhookAttempt, WebhookDelivery

EXCERPT_BYTES = 500  # of the receiver's answer, kept with the attempt


@dataclass(frozen=True)
class Outgoing:
    """One POST to make, with everything read from the store beforehand."""

    delivery_id: int
    url: str
    event_id: int
    event_type: str
    message_id: int | None
    body: bytes
    secret: str
    attempt: int  # 1 for the first try


@dataclass(frozen=True)
class AttemptResult:
    """What one POST came to."""

    delivery_id: int
    at: datetime
    status_code: int | None = None
    error: str = ""
    duration_ms: int = 0
    excerpt: str = ""
    # No use trying again (a refused destination the URL names itself): failed at once.
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(limit: int, lease_seconds: float) -> list[Outgoing]:
    """Take up to ``limit`` due deliveries, oldest first, leased for ``lease_seconds``.

    On PostgreSQL the rows are locked with SKIP LOCKED, so several senders
    share the work; SQLite serialises writers, which has the same effect.
    """
    now = timezone.now()
    due = WebhookDelivery.objects.filter(
        state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    )
    if not due.exists():  # the usual case when idle: no transaction, no write lock
        return []
    with transaction.atomic():
        ids = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        WebhookDelivery.objects.filter(id__in=ids).update(
            next_attempt_at=now + timedelta(seconds=lease_seconds)
        )
        rows = list(
            WebhookDelivery.objects.filter(id__in=ids)
            .select_related("event", "api_key")
            .order_by("id")
        )
    return [
        Outgoing(
            delivery_id=row.pk,
            url=row.url,
            event_id=row.event_id,
            event_type=row.event.type,
            message_id=row.event.message_id,
            body=event_json(row.event).encode("utf-8"),
            secret=row.api_key.webhook_secret if row.api_key else settings.WEBHOOK_SECRET,
            attempt=row.attempts + 1,
        )
        for row in rows
    ]


def retry_delay(attempts: int, backoff: Sequence[float]) -> float:
    """Seconds to wait after the ``attempts``-th failure (the last delay repeats)."""
    return backoff[min(attempts, len(backoff)) - 1] if backoff else 0.0


def record_results(
    results: Sequence[AttemptResult], max_attempts: int, backoff: Sequence[float]
) -> list[WebhookDelivery]:
    """Keep every attempt and move each delivery on: delivered, failed for good, or
    due again after its backoff. Returns the deliveries as they now are."""
    if not results:
        return []
    with transaction.atomic():
        deliveries = WebhookDelivery.objects.select_for_update().in_bulk(
            [r.delivery_id for r in results]
        )
        attempts = []
        changed = []
        for result in results:
            delivery = deliveries.get(result.delivery_id)
            if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
                continue
            delivery.attempts += 1
            delivery.last_status = result.status_code
            delivery.last_error = result.error[:200]
            if result.ok:
                delivery.state = WebhookDelivery.State.DELIVERED
                delivery.delivered_at = result.at
            elif result.final or delivery.attempts >= max_attempts:
                delivery.state = WebhookDelivery.State.FAILED
            else:
                delivery.next_attempt_at = result.at + timedelta(
                    seconds=retry_delay(delivery.attempts, backoff)
                )
            attempts.append(
                WebhookAttempt(
                    delivery=delivery,
                    number=delivery.attempts,
                    at=result.at,
                    status_code=result.status_code,
                    error=result.error[:200],
                    duration_ms=result.duration_ms,
                    response_excerpt=result.excerpt[:EXCERPT_BYTES],
                )
            )
            changed.append(delivery)
        WebhookAttempt.objects.bulk_create(attempts)
        WebhookDelivery.objects.bulk_update(
            changed,
            ["attempts", "last_status", "last_error", "state", "delivered_at", "next_attempt_at"],
        )
    return changed
