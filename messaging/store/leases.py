"""Parts whose worker died (their lease ran out) go back to the queue."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging.models import MessagePart
from messaging.states import State, sources_of
from messaging.store.settling import settle_messages
from messaging.store.types import StoreChanges

logger = logging.getLogger(__name__)


def requeue_abandoned(all_in_flight: bool = False) -> int:
    """Put parts whose worker died (their lease ran out) back in the queue; with
    ``all_in_flight``, every part in flight (the sole worker is starting). They
    may have reached the SMSC, so they are marked possibly duplicated."""
    now = timezone.now()
    # Parts in flight, as far as the table lets them go back to the queue.
    query = Q(state__in=sources_of(State.QUEUED, within=(State.SUBMITTING,)))
    if not all_in_flight:
        query &= Q(lease_until__lt=now) | Q(lease_until__isnull=True)
    with transaction.atomic():
        parts = list(MessagePart.objects.select_for_update(skip_locked=True).filter(query))
        for part in parts:
            part.state = State.QUEUED
            part.possibly_duplicated = True
            part.lease_until = None
            part.next_attempt_at = now
        MessagePart.objects.bulk_update(
            parts, ["state", "possibly_duplicated", "lease_until", "next_attempt_at"]
        )
        changes = StoreChanges()
        settle_messages({p.message_id for p in parts}, changes)
        changes.flush()
    if parts:
        logger.warning("requeued %d parts whose outcome is unknown", len(parts))
    return len(parts)
