"""Storing new messages (the API's sends) with their parts, as queued, or as
claimed by a worker they are handed to at once.

Three statements for the whole batch (messages, parts, transitions), not the
ORM's compiled inserts: the batch API stores thousands a second.

``create_handed_over`` stores messages already claimed, under the lease of the
worker of the same process that takes them straight from the API
(``messaging.handoff``): the rows the claim would write, written by the
transaction that stores them, so neither a claim nor a read-back of what was
just written stands between a request and its submit_sm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from messaging.models import Message, MessagePart, StateTransition
from messaging.states import MESSAGE_TRANSITIONS, State, check_transition
from messaging.store.backends import ModelRows, Sql
from messaging.store.references import take_references
from messaging.store.types import ClaimedPart, NewMessage
from sms.splitting import SplitResult, with_reference


def create_messages(new_messages: Sequence[NewMessage]) -> list[Message]:
    """Store messages and their parts as queued; returns the saved messages."""
    messages, _ = _create(new_messages, None)
    return messages


@dataclass(frozen=True)
class HandOver:
    """Whose lease the parts handed over are stored under, and how many it takes."""

    worker_id: str
    lease_seconds: float
    room: int  # parts at most; the messages past it are queued as usual
    connector: str = ""  # the worker's: only messages for it are handed over


def create_handed_over(
    new_messages: Sequence[NewMessage], hand_over: HandOver
) -> tuple[list[Message], list[ClaimedPart]]:
    """Store messages; those due now are claimed for ``hand_over``'s worker, whole
    messages in order while its room lasts, as ``claim_parts`` would have claimed
    them. Returns the saved messages and the claimed parts."""
    # The move a claim makes, checked as the claim checks it (the state tables).
    check_transition(State.QUEUED, State.SUBMITTING)
    check_transition(State.QUEUED, State.SUBMITTING, MESSAGE_TRANSITIONS)
    return _create(new_messages, hand_over)


def _create(
    new_messages: Sequence[NewMessage], hand_over: HandOver | None
) -> tuple[list[Message], list[ClaimedPart]]:
    splits = _with_references(new_messages)
    with transaction.atomic(), Sql() as sql:
        now = timezone.now()
        handed = _handed(new_messages, splits, hand_over, now)
        handed_set = set(handed)
        table = sql.table(Message)
        values = [
            _message_values(table, new, split, now, State.SUBMITTING if i in handed_set else None)
            for i, (new, split) in enumerate(zip(new_messages, splits, strict=True))
        ]
        ids = sql.insert_returning_ids(table, [table.converted(v) for v in values])
        messages = [table.saved_instance(pk, v) for pk, v in zip(ids, values, strict=True)]
        queued = [i for i in range(len(messages)) if i not in handed_set]
        sql.insert(
            MessagePart, _parts([messages[i] for i in queued], [splits[i] for i in queued], now)
        )
        claimed = []
        if handed:
            assert hand_over is not None
            lease = (hand_over.worker_id, now + timedelta(seconds=hand_over.lease_seconds))
            rows = _parts([messages[i] for i in handed], [splits[i] for i in handed], now, lease)
            parts_table = sql.table(MessagePart)
            part_ids = sql.insert_returning_ids(parts_table, [parts_table.row(r) for r in rows])
            claimed = [
                _claimed(part_id, row, new_messages[i], messages[i])
                for part_id, row, i in zip(part_ids, rows, _owners(handed, splits), strict=True)
            ]
        sql.insert(StateTransition, _transitions(messages, handed, now))
    return messages, claimed


def _handed(
    new_messages: Sequence[NewMessage],
    splits: Sequence[SplitResult],
    hand_over: HandOver | None,
    now: datetime,
) -> list[int]:
    """The positions of the messages handed over: due now, still valid, whole, in
    order while the room lasts (what the claim would take)."""
    if hand_over is None:
        return []
    handed, room = [], hand_over.room
    for i, (new, split) in enumerate(zip(new_messages, splits, strict=True)):
        if new.connector != hand_over.connector:
            continue  # another connector's worker claims it
        if new.schedule_at is not None and new.schedule_at > now:
            continue
        if new.validity_until is not None and new.validity_until <= now:
            continue  # left for expire_overdue, as the claim leaves it
        if len(split.parts) > room:
            break
        handed.append(i)
        room -= len(split.parts)
    return handed


def _owners(handed: list[int], splits: Sequence[SplitResult]) -> list[int]:
    """The message position of each handed part, in the order their rows were made."""
    return [i for i in handed for _ in splits[i].parts]


def _transitions(messages: Sequence[Message], handed: list[int], now: datetime) -> list[dict]:
    """Stored (queued); the messages handed over move on to submitting, as a claim moves them."""
    rows = [
        {"message_id": m.pk, "to_state": State.QUEUED, "at": now, "detail": "stored"}
        for m in messages
    ]
    rows += [
        {
            "message_id": messages[i].pk,
            "from_state": State.QUEUED,
            "to_state": State.SUBMITTING,
            "at": now,
        }
        for i in handed
    ]
    return rows


def _claimed(part_id: int, row: dict, new: NewMessage, message: Message) -> ClaimedPart:
    """The claimed part of a row just written (what ``claim_parts`` reads back)."""
    sar = (row["sar_ref"], row["sar_total"], row["sar_seq"]) if row["sar_ref"] is not None else None
    return ClaimedPart(
        part_id=part_id,
        message_id=message.pk,
        index=row["index"],
        src=new.src,
        src_ton=new.src_ton,
        src_npi=new.src_npi,
        dst=new.dst,
        dst_ton=new.dst_ton,
        dst_npi=new.dst_npi,
        data_coding=message.data_coding,
        esm_class=row["esm_class"],
        short_message=row["short_message"],
        sar=sar,
        use_payload=row["use_payload"],
        register=new.register,
        priority=new.priority,
        validity_until=new.validity_until,
        attempts=row["attempts"],
        waited=bool(new.notify_channel),
    )


def _with_references(new_messages: Sequence[NewMessage]) -> list[SplitResult]:
    """Each message's parts. Long messages cut with a reference (not one
    message_payload) get a reference of their own for their handset, written
    into their parts."""
    cut_again = [
        len(n.split.parts) > 1 and n.split.parts[0].use_payload is False for n in new_messages
    ]
    handsets = [n.dst for n, cut in zip(new_messages, cut_again, strict=True) if cut]
    references = iter(take_references(handsets))
    return [
        with_reference(new.split, next(references)) if cut else new.split
        for new, cut in zip(new_messages, cut_again, strict=True)
    ]


def _message_values(
    table: ModelRows, new: NewMessage, split: SplitResult, now: datetime, state: str | None
) -> list:
    """The message's row (every column's value, unconverted); queued unless ``state``."""
    return table.values(
        {
            "state": state or State.QUEUED,
            "src": new.src,
            "src_ton": new.src_ton,
            "src_npi": new.src_npi,
            "dst": new.dst,
            "dst_ton": new.dst_ton,
            "dst_npi": new.dst_npi,
            "text": new.text,
            "encoding": split.encoding,
            "requested_encoding": new.requested_encoding,
            "data_coding": split.data_coding,
            "ucs2_forced_by": "".join(split.ucs2_forced_by)[:64],
            "parts_count": len(split.parts),
            "register": new.register,
            "priority": new.priority,
            "schedule_at": new.schedule_at,
            "validity_until": new.validity_until,
            "reference": new.reference,
            "callback_url": new.callback_url,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "api_key_id": new.api_key_id,
            "notify_channel": new.notify_channel,
            "connector": new.connector,
            "created_at": now,
            "updated_at": now,
        }
    )


def _parts(
    messages: Sequence[Message],
    splits: Sequence[SplitResult],
    now: datetime,
    lease: tuple[str, datetime] | None = None,
) -> list[dict]:
    """The parts' rows of the messages just stored, due at once or when scheduled;
    with ``lease`` (worker, until), claimed by that worker as ``claim_parts`` claims
    (submitting, one try)."""
    claimed = (
        {}
        if lease is None
        else {"state": State.SUBMITTING, "worker": lease[0], "lease_until": lease[1], "attempts": 1}
    )
    parts = []
    for message, split in zip(messages, splits, strict=True):
        message_id = message.pk
        due = message.schedule_at or now
        for spec in split.parts:
            parts.append(
                {
                    "message_id": message_id,
                    "index": spec.index,
                    "short_message": spec.short_message,
                    "esm_class": spec.esm_class,
                    "sar_ref": spec.sar[0] if spec.sar else None,
                    "sar_total": spec.sar[1] if spec.sar else None,
                    "sar_seq": spec.sar[2] if spec.sar else None,
                    "use_payload": spec.use_payload,
                    "next_attempt_at": due,
                    **claimed,
                }
            )
    return parts
