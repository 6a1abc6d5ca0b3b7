"""Settling message states in the ORM paths (leases, expiry, the operator's actions):
``messaging.settlement.settle`` (the rule "a message's state follows its parts",
in one place) applied to messages read with the ORM."""

from __future__ import annotations

from collections import defaultdict

from messaging.event_payloads import message_status_payload
from messaging.models import Message, MessagePart
from messaging.settlement import settle
from messaging.store.types import StoreChanges, SubmitOutcome


def settle_messages(
    message_ids: set[int],
    changes: StoreChanges,
    outcomes_by_part: dict[int, SubmitOutcome] | None = None,
    detail: str = "",
    also: dict | None = None,
) -> int:
    """Derive each message's state from its parts and record what changed (ORM paths).

    ``also``: more fields to write on each message whose state changes (the
    operator's resend forgets the waiting request). Returns how many messages
    changed state.
    """
    if not message_ids:
        return 0
    part_rows = MessagePart.objects.filter(message_id__in=message_ids).values_list(
        "message_id",
        "id",
        "state",
        "command_status",
        "error_code",
        "possibly_duplicated",
        "smsc_id",
        named=True,
    )
    by_message: dict[int, list] = defaultdict(list)
    for row in part_rows:
        by_message[row.message_id].append(row)
    messages = Message.objects.select_for_update().in_bulk(list(message_ids))
    moved = 0
    for message_id, rows in by_message.items():
        message = messages[message_id]
        result = settle(
            message.state,
            message.possibly_duplicated,
            message.submitted_at,
            bool(message.notify_channel),
            rows,
            outcomes_by_part,
            detail,
            changes.now,
        )
        fields = result.fields
        if fields:
            if result.new_state != message.state:
                moved += 1
                fields = {**fields, **(also or {})}
                changes.transition(
                    message, result.new_state, command_status=result.status, detail=result.note
                )
                for key, value in fields.items():
                    setattr(message, key, value)
                changes.event(
                    "status", message_status_payload(message, result.new_state), message_id
                )
            Message.objects.filter(pk=message_id).update(**fields)
        if result.notify:
            changes.notifications.waiters[message.notify_channel].append(
                result.answer(message_id, message.command_status, [row.smsc_id for row in rows])
            )
    return moved
