"""Storing new messages (the API's sends) with their parts, as queued.

Three statements for the whole batch (messages, parts, transitions), not the
ORM's compiled inserts: the batch API stores thousands a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from messaging.models import Message, MessagePart, StateTransition
from messaging.states import State
from messaging.store.backends import ModelRows, Sql
from messaging.store.references import take_references
from messaging.store.types import NewMessage
from sms.splitting import SplitResult, with_reference


def create_messages(new_messages: Sequence[NewMessage]) -> list[Message]:
    """Store messages and their parts as queued; returns the saved messages."""
    splits = _with_references(new_messages)
    with transaction.atomic(), Sql() as sql:
        now = timezone.now()
        table = sql.table(Message)
        values = [
            _message_values(table, new, split, now)
            for new, split in zip(new_messages, splits, strict=True)
        ]
        ids = sql.insert_returning_ids(table, [table.converted(v) for v in values])
        messages = [table.saved_instance(pk, v) for pk, v in zip(ids, values, strict=True)]
        sql.insert(MessagePart, _parts(messages, splits, now))
        sql.insert(
            StateTransition,
            [
                {"message_id": m.pk, "to_state": State.QUEUED, "at": now, "detail": "stored"}
                for m in messages
            ],
        )
    return messages


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


def _message_values(table: ModelRows, new: NewMessage, split: SplitResult, now: datetime) -> list:
    """The message's row (every column's value, unconverted)."""
    return table.values(
        {
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
            "created_at": now,
            "updated_at": now,
        }
    )


def _parts(messages: Sequence[Message], splits: Sequence[SplitResult], now: datetime) -> list:
    """The parts' rows of the messages just stored, due at once or when scheduled."""
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
                }
            )
    return parts
