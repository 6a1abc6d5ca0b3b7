"""The worker takes due parts to send (a lease per part), oldest first.

Three statements for the whole claim: the parts (moved to submitting and read
back in one), their messages, and the messages that move with them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import transaction
from django.utils import timezone

from messaging.models import StateTransition
from messaging.states import MESSAGE_TRANSITIONS, State, sources_of, state_guard
from messaging.store.backends import Sql, aware
from messaging.store.types import ClaimedPart


class DuePart(NamedTuple):
    """A part just claimed, as the claim returns it (its fields are the columns read)."""

    id: int
    message_id: int
    index: int
    esm_class: int
    short_message: bytes
    sar_ref: int | None
    sar_total: int | None
    sar_seq: int | None
    use_payload: bool
    attempts: int
    next_attempt_at: datetime | str


class ClaimedMessage(NamedTuple):
    """The message of claimed parts (its fields are the columns read)."""

    id: int
    src: str
    src_ton: int
    src_npi: int
    dst: str
    dst_ton: int
    dst_npi: int
    data_coding: int
    register: str
    priority: int
    validity_until: datetime | str | None
    notify_channel: str
    state: str


_MESSAGE_SELECT = ", ".join(f'"{c}"' for c in ClaimedMessage._fields)


def claim_parts(
    worker_id: str, limit: int, lease_seconds: float, connector: str = ""
) -> list[ClaimedPart]:
    """Take up to ``limit`` due parts of ``connector``'s messages for this worker,
    oldest first.

    On PostgreSQL the rows are locked with SKIP LOCKED, so several workers
    share the queue without taking the same part twice. Past its validity a
    part is left for ``expire_overdue`` instead of being sent.
    """
    now = timezone.now()
    with transaction.atomic(), Sql() as sql:
        lease_until = now + timedelta(seconds=lease_seconds)
        parts = _take_due_parts(sql, worker_id, limit, lease_until, now, connector)
        if not parts:
            return []
        sql.use_indexes()  # the rest are lookups by id
        messages = _read_messages(sql, {p.message_id for p in parts})
        _move_messages(sql, messages, now)
    return [_claimed(part, messages[part.message_id]) for part in parts]


def _take_due_parts(
    sql: Sql, worker_id: str, limit: int, lease_until: datetime, now: datetime, connector: str
) -> list[DuePart]:
    """Move up to ``limit`` due parts to submitting under this worker's lease;
    them, oldest first (the order they were due in, then their ids)."""
    # The guard comes from the state tables: the parts that may become submitting.
    guard, guard_params = state_guard("p.state", sources_of(State.SUBMITTING))
    sql.use_indexes(ordered=True)  # walk part_claim_idx in order, stop at the limit
    rows = sql.claim_due_parts(
        DuePart._fields,
        guard,
        [State.SUBMITTING, worker_id, sql.dt(lease_until)],
        [*guard_params, sql.dt(now), sql.dt(now), connector, limit],
    )
    parts = [DuePart._make(row) for row in rows]
    parts.sort(key=lambda p: (aware(p.next_attempt_at), p.id))
    return parts


def _read_messages(sql: Sql, message_ids: set[int]) -> dict[int, ClaimedMessage]:
    """The claimed parts' messages, by id.

    Their rows are locked (PostgreSQL: FOR UPDATE OF m in the claim; SQLite: the
    one writer), so the state read here is the state ``_move_messages`` replaces.
    """
    where, params = sql.in_list("id", sorted(message_ids))
    rows = sql.execute(f"SELECT {_MESSAGE_SELECT} FROM messaging_message WHERE {where}", params)
    return {message.id: message for message in map(ClaimedMessage._make, rows)}


def _move_messages(sql: Sql, messages: dict[int, ClaimedMessage], now: datetime) -> None:
    """Messages that may become submitting (the table says which) do, with a transition."""
    sources = sources_of(State.SUBMITTING, table=MESSAGE_TRANSITIONS)
    moved = sorted(m for m, message in messages.items() if message.state in sources)
    if not moved:
        return
    where, params = sql.in_list("id", moved)
    sql.execute(
        f"UPDATE messaging_message SET state = %s, updated_at = %s WHERE {where}",
        [State.SUBMITTING, sql.dt(now), *params],
    )
    sql.insert(
        StateTransition,
        [
            {
                "message_id": m,
                "from_state": messages[m].state,
                "to_state": State.SUBMITTING,
                "at": now,
            }
            for m in moved
        ],
    )


def _claimed(part: DuePart, message: ClaimedMessage) -> ClaimedPart:
    """What the worker needs to build the part's submit_sm."""
    return ClaimedPart(
        part_id=part.id,
        message_id=part.message_id,
        index=part.index,
        src=message.src,
        src_ton=message.src_ton,
        src_npi=message.src_npi,
        dst=message.dst,
        dst_ton=message.dst_ton,
        dst_npi=message.dst_npi,
        data_coding=message.data_coding,
        esm_class=part.esm_class,
        short_message=bytes(part.short_message),
        sar=(part.sar_ref, part.sar_total, part.sar_seq) if part.sar_ref is not None else None,
        use_payload=bool(part.use_payload),
        register=message.register,
        priority=message.priority,
        validity_until=aware(message.validity_until),
        attempts=part.attempts,
        waited=bool(message.notify_channel),
    )
