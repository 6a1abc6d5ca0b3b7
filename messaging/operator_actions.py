"""What an operator may do to messages by hand: resend failed ones, cancel queued ones.

Both go through the same rules as the worker's writes: parts change state only
along legal transitions (``states.TRANSITIONS``), the message is settled by the
one rule (``messaging.settlement``, through ``store.settling.settle_messages``),
and every change is recorded as a transition and a status event in the same
transaction. Rows are locked parts first, then messages, the
order the worker uses, so an operator and a worker never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable

from asgiref.sync import async_to_sync
from django.db import transaction

from messaging.models import Message, MessagePart
from messaging.notify import publish, ring_worker
from messaging.states import State, check_transition
from messaging.store import Notifications, StoreChanges
from messaging.store.settling import settle_messages


def resend_failed(message_ids: Iterable[int], by: str) -> int:
    """Put the failed parts of failed messages back in the queue, due now.

    Parts that did reach the SMSC are left alone; ``attempts`` keeps counting.
    Returns how many messages went back to the queue.
    """
    ids = list(message_ids)
    with transaction.atomic():
        changes = StoreChanges()
        parts = _locked_parts(ids, State.FAILED)
        for part in parts:
            check_transition(part.state, State.QUEUED)
            part.state = State.QUEUED
            part.next_attempt_at = changes.now
            part.command_status = None
            part.final_at = None
            part.lease_until = None
        MessagePart.objects.bulk_update(
            parts, ["state", "next_attempt_at", "command_status", "final_at", "lease_until"]
        )
        # The settlement rule clears final_at and command_status of a message back
        # in the queue; no request waits for a resent message.
        moved = settle_messages(
            {p.message_id for p in parts},
            changes,
            detail=f"resent by {by}",
            also={"notify_channel": ""},
        )
        notes = changes.flush()
    _after_commit(notes, wake_worker=moved > 0)
    return moved


def cancel_queued(message_ids: Iterable[int], by: str) -> int:
    """Fail the parts of queued messages that have not been sent yet.

    Parts already with the SMSC cannot be taken back and are left alone; the
    message ends failed once none of its parts is on its way. Returns how many
    messages changed state.
    """
    ids = list(message_ids)
    with transaction.atomic():
        changes = StoreChanges()
        parts = _locked_parts(ids, State.QUEUED)
        for part in parts:
            check_transition(part.state, State.FAILED)
            part.state = State.FAILED
            part.command_status = None
            part.final_at = changes.now
        MessagePart.objects.bulk_update(parts, ["state", "command_status", "final_at"])
        moved = settle_messages({p.message_id for p in parts}, changes, detail=f"cancelled by {by}")
        notes = changes.flush()
    _after_commit(notes, wake_worker=False)
    return moved


def _locked_parts(message_ids: list[int], state: str) -> list[MessagePart]:
    """The ``state`` parts of those messages that are themselves in ``state``, locked
    in id order (the order the worker locks them in)."""
    messages = Message.objects.filter(pk__in=message_ids, state=state).values("pk")
    return list(
        MessagePart.objects.select_for_update()
        .filter(message_id__in=messages, state=state)
        .order_by("id")
    )


def _after_commit(notes: Notifications, wake_worker: bool) -> None:
    """Ring the bells: stream listeners, and the worker when there is work."""
    async_to_sync(publish)(notes)
    if wake_worker:
        async_to_sync(ring_worker)()
