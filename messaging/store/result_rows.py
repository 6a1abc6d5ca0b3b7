"""The rows a batch of results reads and writes: parts, their messages, receipts.

Each row class declares its columns once, as its fields: the SELECT is built
from them and a row is made from the result in that same order, so a column
added to a class is read (and, if in ``PART_COLUMNS``/``MESSAGE_COLUMNS``,
written back) with no other edit. Rows are slotted dataclasses made with
positional arguments: as cheap as the hand-written classes they replace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import NamedTuple

from messaging.models import Event, Message, MessagePart, Receipt, StateTransition
from messaging.store.backends import Sql
from messaging.store.types import ReceiptIn, SubmitOutcome
from smpp.smsc_ids import IdStyle, response_keys

# A datetime as read: aware on PostgreSQL, naive UTC on SQLite (see ``aware``).
Read = datetime | None


@dataclass(slots=True, eq=False)
class _PartRow:
    """A part the batch may change; every field but ``dirty`` is a column read."""

    id: int
    message_id: int
    index: int
    state: str
    command_status: int | None
    bind_id: str
    sequence_number: int | None
    lease_until: Read
    smsc_id: str
    match_key: str
    submitted_at: Read
    final_at: Read
    next_attempt_at: Read
    possibly_duplicated: bool
    error_code: int | None
    attempts: int
    connector: str
    dirty: bool = False  # changed: to be written


@dataclass(slots=True, eq=False)
class _MessageRow:
    """The message of parts the batch reads; every field up to ``final_at`` is a column."""

    id: int
    src: str
    dst: str
    reference: str
    parts_count: int
    notify_channel: str
    validity_until: Read
    state: str
    updated_at: Read
    possibly_duplicated: bool
    command_status: int | None
    error_code: int | None
    submitted_at: Read
    final_at: Read
    parts: list[_PartRow] = field(default_factory=list)
    dirty: bool = False  # changed: to be written


class _ReceiptRow:
    """A receipt being stored or matched; ``id`` is None for a new one."""

    __slots__ = ("id", "receipt", "part", "matched_at")

    def __init__(self, receipt: ReceiptIn, part: _PartRow | None, matched_at, id_=None):
        self.id = id_
        self.receipt = receipt
        self.part = part
        self.matched_at = matched_at


class WaitingReceipt(NamedTuple):
    """A receipt kept unmatched, read again when its SMSC id may have come."""

    id: int
    smsc_id: str
    match_key: str
    stat: str
    message_state: int | None
    error_code: int | None
    source_addr: str
    destination_addr: str
    raw_text: str


def _columns_read(row_class: type, stop: str) -> tuple[str, ...]:
    names = [f.name for f in fields(row_class)]
    return tuple(names[: names.index(stop) + 1])


# The columns each row reads, and those a batch writes back (the others never change).
PART_READ = _columns_read(_PartRow, "connector")
MESSAGE_READ = _columns_read(_MessageRow, "final_at")
PART_COLUMNS = PART_READ[PART_READ.index("state") :]
MESSAGE_COLUMNS = MESSAGE_READ[MESSAGE_READ.index("state") :]
_PART_WRITE = attrgetter(*PART_COLUMNS, "id")  # a row for ``Sql.update_rows``
_MESSAGE_WRITE = attrgetter(*MESSAGE_COLUMNS, "id")
_PARTS_AND_MESSAGES = ", ".join(
    [*(f'p."{c}"' for c in PART_READ), *(f'm."{c}"' for c in MESSAGE_READ[1:])]
)
_WAITING = ", ".join(f'"{c}"' for c in WaitingReceipt._fields)


# --- reading -------------------------------------------------------------------------


def wanted_keys(outcomes: Iterable[SubmitOutcome], id_style: str = IdStyle.AUTO) -> dict[str, str]:
    """The keys a waiting receipt may carry for each new SMSC id -> the id's own key:
    every id's own key first, so that an exact match wins over another id's other base.
    ``id_style``: how the connector's SMSC writes its ids (``smpp.smsc_ids.IdStyle``)."""
    wanted: dict[str, str] = {}
    keys_by_outcome = [response_keys(o.smsc_id, id_style) for o in outcomes if o.smsc_id]
    for keys in keys_by_outcome:
        wanted.setdefault(keys[0], keys[0])
    for keys in keys_by_outcome:
        for key in keys[1:]:
            wanted.setdefault(key, keys[0])
    return wanted


def receipts_waiting(sql: Sql, keys: Sequence[str], connector: str) -> list[WaitingReceipt]:
    """Receipts from ``connector``'s SMSC kept unmatched under ``keys`` (they overtook
    their submit_sm_resp: usually none), newest first, locked."""
    where, params = sql.in_list("match_key", list(keys))
    rows = sql.execute(
        f"SELECT {_WAITING} FROM messaging_receipt "
        f"WHERE matched_at IS NULL AND {where} AND connector = %s "
        f"ORDER BY id DESC{sql.for_update}",
        [*params, connector],
    )
    return [WaitingReceipt._make(row) for row in rows]


def messages_touched(
    sql: Sql, outcomes: Sequence[SubmitOutcome], keys: set[str], connector: str
) -> list[int]:
    """The ids of the messages of the outcomes' parts and of ``connector``'s parts
    with ``keys``."""
    message_ids = {o.message_id for o in outcomes if o.message_id is not None}
    lookups = []  # one indexed lookup per query (an OR of two would scan the table)
    unknown = [o.part_id for o in outcomes if o.message_id is None]
    if unknown:
        lookups.append(sql.in_list("id", unknown))
    if keys:
        where, params = sql.in_list("match_key", list(keys))
        lookups.append((f"{where} AND connector = %s", [*params, connector]))
    for where, params in lookups:
        message_ids.update(
            r[0]
            for r in sql.execute(
                f"SELECT message_id FROM messaging_messagepart WHERE {where}", params
            )
        )
    return sorted(message_ids)


def read_parts(
    sql: Sql, message_ids: list[int]
) -> tuple[dict[int, _PartRow], dict[int, _MessageRow]]:
    """Lock and read the messages ``message_ids`` and all their parts, by id
    (a message's parts in index order)."""
    # By explicit ids: the planner then walks the indexes instead of a join's scan.
    parts_where, params = sql.in_list("p.message_id", message_ids)
    messages_where, more = sql.in_list("m.id", message_ids)
    rows = sql.execute(
        f"SELECT {_PARTS_AND_MESSAGES} "
        "FROM messaging_messagepart p JOIN messaging_message m ON m.id = p.message_id "
        f"WHERE {parts_where} AND {messages_where} "
        f'ORDER BY p.message_id, p."index"{sql.for_update}',
        params + more,
    )
    parts: dict[int, _PartRow] = {}
    messages: dict[int, _MessageRow] = {}
    width = len(PART_READ)
    for row in rows:
        part = _PartRow(*row[:width])
        parts[part.id] = part
        message = messages.get(part.message_id)
        if message is None:
            message = messages[part.message_id] = _MessageRow(part.message_id, *row[width:])
        message.parts.append(part)
    return parts, messages


# --- writing -------------------------------------------------------------------------


def write_rows(
    sql: Sql,
    now: datetime,
    changed: tuple[Iterable[_PartRow], Iterable[_MessageRow]],
    receipts: tuple[Sequence[_ReceiptRow], Sequence[_ReceiptRow]],
    transitions: Sequence[tuple],
    events: Sequence[tuple],
    connector: str,
) -> None:
    """Write a batch: the ``changed`` (parts, messages) that are dirty, the (matched,
    new) ``receipts`` (the new from ``connector``'s SMSC), ``transitions`` (message
    id, from, to, command_status, detail) and ``events`` (type, message id,
    payload), all at ``now``."""
    parts, messages = changed
    matched, new = receipts
    sql.update_rows(MessagePart, PART_COLUMNS, [_PART_WRITE(p) for p in parts if p.dirty])
    sql.update_rows(Message, MESSAGE_COLUMNS, [_MESSAGE_WRITE(m) for m in messages if m.dirty])
    sql.update_rows(
        Receipt,
        ("part_id", "message_id", "matched_at"),
        [(r.part.id, r.part.message_id, now, r.id) for r in matched],
    )
    sql.insert(Receipt, [_new_receipt(row, now, connector) for row in new])
    sql.insert(
        StateTransition,
        [
            {
                "message_id": message_id,
                "from_state": old,
                "to_state": new_state,
                "command_status": status,
                "detail": detail,
                "at": now,
            }
            for message_id, old, new_state, status, detail in transitions
        ],
    )
    if events:
        sql.insert(
            Event,
            [
                {"type": kind, "message_id": message_id, "payload": data, "created_at": now}
                for kind, message_id, data in events
            ],
        )


def _new_receipt(row: _ReceiptRow, now: datetime, connector: str) -> dict:
    """The values of a receipt row stored by this batch (matched or not)."""
    r, part = row.receipt, row.part
    return {
        "smsc_id": r.smsc_id,
        "match_key": r.match_keys[0] if r.match_keys else "",
        "connector": connector,
        "part_id": part.id if part else None,
        "message_id": part.message_id if part else None,
        "stat": r.stat,
        "message_state": r.message_state,
        "error_code": r.error_code,
        "submitted_date": r.submitted_date,
        "done_date": r.done_date,
        "source_addr": r.source_addr,
        "destination_addr": r.destination_addr,
        "raw_text": r.raw_text,
        "tlvs": r.tlvs,
        "received_at": now,
        "matched_at": now if part else None,
    }
