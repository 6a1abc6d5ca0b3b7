"""Queued parts past their message's validity expire instead of being sent."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from messaging.models import Message, MessagePart
from messaging.states import State, sources_of
from messaging.store.settling import settle_messages
from messaging.store.types import Notifications, StoreChanges


def expire_overdue() -> Notifications:
    """Queued parts past their message's validity expire instead of being sent."""
    now = timezone.now()
    with transaction.atomic():
        # Messages first (few have a validity, fewer are past it), then their parts:
        # the other way round reads every queued part, a million of them at times.
        overdue = Message.objects.filter(
            validity_until__lt=now, state__in=(State.QUEUED, State.SUBMITTING)
        ).values_list("id", flat=True)[:1000]
        parts = list(
            MessagePart.objects.select_for_update(skip_locked=True).filter(
                state__in=sources_of(State.EXPIRED, within=(State.QUEUED,)),
                message_id__in=list(overdue),
            )
        )
        if not parts:
            return Notifications()
        for part in parts:
            part.state = State.EXPIRED
            part.final_at = now
        MessagePart.objects.bulk_update(parts, ["state", "final_at"])
        changes = StoreChanges()
        settle_messages({p.message_id for p in parts}, changes, detail="validity ran out")
        return changes.flush()
