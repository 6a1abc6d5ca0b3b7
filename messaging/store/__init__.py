"""Reads and writes of the message store, in batches.

Everything that changes a message goes through here, so that each change is
recorded with its transition and its event in one transaction. The functions
are synchronous (Django's ORM); the worker calls them from one database thread,
the API from its request threads. They return the notifications to publish
*after* commit; publishing is the caller's job (see ``messaging.notify``).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging.models import (
    ConcatReference,
    Event,
    IncomingFragment,
    IncomingMessage,
    Message,
    MessagePart,
    Receipt,
    StateTransition,
)
from messaging.states import RECEIPT_STATE, State, derive_message_state, is_final
from messaging.store.sql import MAX_IN_LIST, Sql, aware, chunks
from smpp.smsc_ids import match_key, match_keys
from sms.reassembly import Fragment, assemble
from sms.splitting import SplitResult, with_reference

logger = logging.getLogger(__name__)


# --- what goes in --------------------------------------------------------------


def storable_text(value: str) -> str:
    """Text as both databases can hold it: PostgreSQL's text cannot hold NUL,
    which becomes U+FFFD (the replacement character)."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


@dataclass
class NewMessage:
    """A validated send request, ready to be stored."""

    dst: str
    text: str
    split: SplitResult
    src: str = ""
    src_ton: int = 0
    src_npi: int = 0
    dst_ton: int = 0
    dst_npi: int = 0
    requested_encoding: str = "auto"
    register: str = ""
    priority: int = 0
    schedule_at: datetime | None = None
    validity_until: datetime | None = None
    reference: str = ""
    callback_url: str = ""
    idempotency_key: str | None = None
    request_hash: str = ""
    api_key_id: int | None = None
    # The channel of the server process whose request waits for the SMSC's answer.
    notify_channel: str = ""


@dataclass(frozen=True)
class ClaimedPart:
    """Everything the worker needs to build one submit_sm, read in one query."""

    part_id: int
    message_id: int
    index: int
    src: str
    src_ton: int
    src_npi: int
    dst: str
    dst_ton: int
    dst_npi: int
    data_coding: int
    esm_class: int
    short_message: bytes
    sar: tuple[int, int, int] | None
    use_payload: bool
    register: str
    priority: int
    validity_until: datetime | None
    attempts: int
    waited: bool = False  # an API request waits for the SMSC's answer to its message


@dataclass(frozen=True)
class SubmitOutcome:
    """What became of one submit_sm."""

    SUBMITTED = "submitted"  # the SMSC accepted it (status 0)
    FAILED = "failed"  # the SMSC refused it for good
    RETRY = "retry"  # refused for now (throttled, queue full...): try again later
    UNKNOWN = "unknown"  # no answer (timeout, lost link): requeue, maybe duplicated
    UNSENT = "unsent"  # claimed but never sent (the link went first): requeue as it was

    part_id: int
    outcome: str
    command_status: int | None = None
    smsc_id: str = ""
    bind_id: str = ""
    sequence: int | None = None
    retry_at: datetime | None = None
    detail: str = ""
    message_id: int | None = None  # the part's message, when the caller knows it


@dataclass(frozen=True)
class ReceiptIn:
    """A delivery receipt as the worker read it off the wire (already parsed)."""

    smsc_id: str  # as the SMSC gave it (stored so)
    match_keys: tuple[str, ...]  # smpp.smsc_ids.match_keys(smsc_id): its own first
    stat: str
    message_state: int | None
    error_code: int | None
    submitted_date: datetime | None
    done_date: datetime | None
    source_addr: str
    destination_addr: str
    raw_text: str
    tlvs: dict


@dataclass(frozen=True)
class FragmentIn:
    """One deliver_sm of an incoming message (UDH already stripped)."""

    src: str
    dst: str
    data_coding: int
    payload: bytes
    reference: int | None = None
    total: int = 1
    seq: int = 1


# --- what comes out ------------------------------------------------------------


# What a request waiting on /v1/send is told: (message id, its state, its
# command_status, its parts' SMSC ids in order). Lists and scalars only: it
# crosses the channel layer as it is.
SmscAnswer = tuple[int, str, int | None, list[str | None]]


@dataclass
class Notifications:
    """Bells to ring after commit."""

    last_event_id: int | None = None
    # channel name -> the answers of the messages whose wait is over
    waiters: dict[str, list[SmscAnswer]] = field(default_factory=lambda: defaultdict(list))

    def merge(self, other: Notifications) -> None:
        if other.last_event_id is not None:
            self.last_event_id = max(self.last_event_id or 0, other.last_event_id)
        for channel, answers in other.waiters.items():
            self.waiters[channel].extend(answers)


class StoreChanges:
    """Collects transitions and events during one transaction, then writes them in bulk."""

    def __init__(self) -> None:
        self.now = timezone.now()
        self.transitions: list[StateTransition] = []
        self.events: list[Event] = []
        self.notifications = Notifications()

    def transition(self, message: Message, new_state: str, command_status=None, detail=""):
        self.transitions.append(
            StateTransition(
                message_id=message.pk,
                from_state=message.state,
                to_state=new_state,
                command_status=command_status,
                detail=detail[:200],
                at=self.now,
            )
        )

    def event(self, type_: str, payload: dict, message_id: int | None = None) -> None:
        self.events.append(
            Event(type=type_, payload=payload, message_id=message_id, created_at=self.now)
        )

    def flush(self) -> Notifications:
        if self.transitions:
            StateTransition.objects.bulk_create(self.transitions)
        if self.events:
            created = Event.objects.bulk_create(self.events)
            ids = [e.pk for e in created if e.pk is not None]
            if ids:
                self.notifications.last_event_id = max(ids)
            else:  # a backend that does not return ids: ask
                self.notifications.last_event_id = (
                    Event.objects.order_by("-id").values_list("id", flat=True).first()
                )
        return self.notifications


def status_event_payload(message: Message, state: str) -> dict:
    """The event clients see when a message changes state."""
    return _status_payload(
        message.pk,
        message.src,
        message.dst,
        message.reference,
        message.command_status,
        message.error_code,
        state,
    )


def _status_payload(
    message_id: int, src: str, dst: str, reference: str, command_status, error_code, state: str
) -> dict:
    return {
        "type": "status",
        "id": str(message_id),
        "src": src,
        "dst": dst,
        "text": "",
        "state": state,
        "reference": reference,
        "command_status": command_status,
        "error_code": error_code,
    }


# --- creating messages ---------------------------------------------------------


REFERENCES = 65536  # concatenation references, 16 bits (an 8-bit UDH takes them modulo 256)


def allocate_references(sql: Sql, dsts: Sequence[str]) -> list[int]:
    """The next concatenation reference for each entry of ``dsts``, in order,
    rising per handset so that the parts of consecutive long messages to one
    handset never share a reference.

    One upsert for the whole batch, which adds each handset's count to its
    counter and returns the new value (a row per handset, created at 0 on
    first use). It locks the counters it moves until commit, in the order of
    the handsets, so concurrent batches neither share a reference nor deadlock.
    Before, a long message cost three ORM queries of its own: 70 % of a batch's
    CPU when its messages were long.
    """
    counts = Counter(dsts)
    start: dict[str, int] = {}
    table = ConcatReference._meta.db_table
    for handsets in chunks(sorted(counts), MAX_IN_LIST // 2):
        rows = ", ".join([f"({sql.mark}, {sql.mark})"] * len(handsets))
        for handset, after in sql.execute(
            f"INSERT INTO {table} (dst, next_value) VALUES {rows} "
            f"ON CONFLICT (dst) DO UPDATE SET "
            f"next_value = ({table}.next_value + excluded.next_value) %% {REFERENCES} "
            "RETURNING dst, next_value",
            [value for dst in handsets for value in (dst, counts[dst] % REFERENCES)],
        ):
            start[handset] = (after - counts[handset]) % REFERENCES
    references = []
    for dst in dsts:
        references.append(start[dst])
        start[dst] = (start[dst] + 1) % REFERENCES
    return references


def take_references(dsts: Sequence[str]) -> list[int]:
    """``allocate_references`` in a short transaction of its own.

    The counters are rows shared by every batch to the same handsets. Held
    until a batch's commit, they put concurrent batches to those handsets in
    a line: the 200-character bench (3b) spent most of its time waiting on
    these locks on PostgreSQL. A batch that fails after this leaves its
    references unused, which is harmless: they need only differ from the
    handset's recent ones. Inside a caller's transaction the locks still last
    until its commit.
    """
    if not dsts:
        return []
    with transaction.atomic(), Sql() as sql:
        return allocate_references(sql, dsts)


def create_messages(new_messages: Sequence[NewMessage]) -> list[Message]:
    """Store messages and their parts as queued; returns the saved messages.

    Three statements for the whole batch (messages, parts, transitions), not
    the ORM's compiled inserts: the batch API stores thousands a second.
    """
    # Long messages cut with a reference (not one message_payload): each gets a
    # reference of its own for its handset, written into its parts.
    cut_again = [
        len(n.split.parts) > 1 and n.split.parts[0].use_payload is False for n in new_messages
    ]
    handsets = [n.dst for n, cut in zip(new_messages, cut_again, strict=True) if cut]
    references = iter(take_references(handsets))
    with transaction.atomic(), Sql() as sql:
        now = timezone.now()
        table = sql.table(Message)
        values = []
        splits = []
        for new, cut in zip(new_messages, cut_again, strict=True):
            split = new.split
            if cut:
                split = with_reference(split, next(references))
            splits.append(split)
            values.append(
                table.values(
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
            )
        ids = sql.insert_returning_ids(table, [table.converted(v) for v in values])
        messages = [table.saved_instance(pk, v) for pk, v in zip(ids, values, strict=True)]
        parts = []
        transitions = []
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
            transitions.append(
                {"message_id": message_id, "to_state": State.QUEUED, "at": now, "detail": "stored"}
            )
        sql.insert(MessagePart, parts)
        sql.insert(StateTransition, transitions)
    return messages


# --- the worker's side -----------------------------------------------------------

RESULTS_LOCK = 0x534D5301  # advisory lock taken by every batch of results (PostgreSQL)
#
# The worker's calls (claim_parts, record_results) run thousands of times a
# second: they use raw SQL (store_sql) and rows held as small objects rather
# than model instances. The rules are the ones the ORM paths below follow,
# shared through ``_settlement``.

_PART_COLUMNS = (
    "state",
    "command_status",
    "bind_id",
    "sequence_number",
    "lease_until",
    "smsc_id",
    "match_key",
    "submitted_at",
    "final_at",
    "next_attempt_at",
    "possibly_duplicated",
    "error_code",
    "attempts",
)
_MESSAGE_COLUMNS = (
    "state",
    "updated_at",
    "possibly_duplicated",
    "command_status",
    "error_code",
    "submitted_at",
    "final_at",
)


def claim_parts(worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedPart]:
    """Take up to ``limit`` due parts for this worker, oldest first.

    On PostgreSQL the rows are locked with SKIP LOCKED, so several workers
    share the queue without taking the same part twice. Past its validity a
    part is left for ``expire_overdue`` instead of being sent.
    """
    now = timezone.now()
    with transaction.atomic(), Sql() as sql:
        # Oldest first, walking part_claim_idx (state, next_attempt_at) and stopping at
        # the limit; SQLite's index ends with the id, PostgreSQL's would need sorting
        # every due part for it (the batch itself is put in id order below).
        due = (
            "SELECT p.id FROM messaging_messagepart p "
            "JOIN messaging_message m ON m.id = p.message_id "
            "WHERE p.state = %s AND p.next_attempt_at <= %s "
            "AND (m.validity_until IS NULL OR m.validity_until > %s) "
            + (
                "ORDER BY p.next_attempt_at LIMIT %s"
                if sql.postgres
                else "ORDER BY p.next_attempt_at, p.id LIMIT %s"
            )
        )
        returning = (
            'RETURNING p.id, p.message_id, p."index", p.esm_class, p.short_message, p.sar_ref, '
            "p.sar_total, p.sar_seq, p.use_payload, p.attempts, p.next_attempt_at"
        )
        if not sql.postgres:  # SQLite's RETURNING takes bare column names only
            returning = returning.replace("p.", "")
        params = [State.SUBMITTING, worker_id, sql.dt(now + timedelta(seconds=lease_seconds))]
        params += [State.QUEUED, sql.dt(now), sql.dt(now), limit]
        sql.use_indexes(ordered=True)  # walk part_claim_idx in order, stop at the limit
        if sql.postgres:
            rows = sql.execute(
                # Skipping the messages locked too: a claim never waits for a batch of
                # results (which locks the messages it settles), so they never deadlock.
                f"WITH due AS ({due} FOR UPDATE OF p, m SKIP LOCKED) "
                "UPDATE messaging_messagepart p SET state = %s, worker = %s, lease_until = %s, "
                f"attempts = p.attempts + 1 FROM due WHERE p.id = due.id {returning}",
                params[3:] + params[:3],
            )
        else:
            rows = sql.execute(
                "UPDATE messaging_messagepart SET state = %s, worker = %s, "
                f"lease_until = %s, attempts = attempts + 1 WHERE id IN ({due}) {returning}",
                params,
            )
        if not rows:
            return []
        sql.use_indexes()  # the rest are lookups by id
        rows.sort(key=lambda r: (aware(r[10]), r[0]))
        where, where_params = sql.in_list("id", sorted({r[1] for r in rows}))
        # The messages' rows are locked (PostgreSQL: FOR UPDATE OF m above; SQLite: the
        # one writer), so the state read here is the state the update below replaces.
        messages = {
            r[0]: r
            for r in sql.execute(
                "SELECT id, src, src_ton, src_npi, dst, dst_ton, dst_npi, data_coding, register, "
                "priority, validity_until, notify_channel, state "
                f"FROM messaging_message WHERE {where}",
                where_params,
            )
        }
        moved = sorted(m for m, row in messages.items() if row[12] == State.QUEUED)
        if moved:
            where, where_params = sql.in_list("id", moved)
            sql.execute(
                f"UPDATE messaging_message SET state = %s, updated_at = %s WHERE {where}",
                [State.SUBMITTING, sql.dt(now), *where_params],
            )
            sql.insert(
                StateTransition,
                [
                    {
                        "message_id": m,
                        "from_state": State.QUEUED,
                        "to_state": State.SUBMITTING,
                        "at": now,
                    }
                    for m in moved
                ],
            )
    claimed = []
    for part_id, message_id, index, esm, short, ref, total, seq, payload, attempts, _ in rows:
        m = messages[message_id]
        claimed.append(
            ClaimedPart(
                part_id=part_id,
                message_id=message_id,
                index=index,
                src=m[1],
                src_ton=m[2],
                src_npi=m[3],
                dst=m[4],
                dst_ton=m[5],
                dst_npi=m[6],
                data_coding=m[7],
                esm_class=esm,
                short_message=bytes(short),
                sar=(ref, total, seq) if ref is not None else None,
                use_payload=bool(payload),
                register=m[8],
                priority=m[9],
                validity_until=aware(m[10]),
                attempts=attempts,
                waited=bool(m[11]),
            )
        )
    return claimed


def record_submit_outcomes(
    outcomes: Iterable[SubmitOutcome], max_attempts: int = 10
) -> Notifications:
    """Write what the SMSC answered (or did not) for a batch of submits.

    A part that would be tried again fails after ``max_attempts`` and expires
    when the next try would come after its message's validity.
    """
    return record_results(list(outcomes), (), max_attempts)


def store_receipts(receipts: Sequence[ReceiptIn]) -> Notifications:
    """Keep every receipt; match those whose part is known; settle their messages.

    A receipt whose id matches no part yet is kept unmatched: its part may be
    waiting for its submit_sm_resp, and ``record_submit_outcomes`` matches it then.
    """
    return record_results((), receipts)


def record_results(
    outcomes: Sequence[SubmitOutcome], receipts: Sequence[ReceiptIn], max_attempts: int = 10
) -> Notifications:
    """``record_submit_outcomes(outcomes)`` then ``store_receipts(receipts)``, in one
    transaction: the same rows, transitions and events as the two calls, with a
    few statements for the whole batch instead of several per message."""
    if not outcomes and not receipts:
        return Notifications()
    with transaction.atomic(), Sql() as sql:
        sql.use_indexes()
        # Workers write results one at a time. Otherwise a receipt that reached
        # another worker (SMSCs deliver to any bind of the account) could be stored
        # unmatched while its part's SMSC id is being written, neither transaction
        # seeing the other's row, and stay unmatched for good.
        sql.serialize(RESULTS_LOCK)
        batch = _ResultBatch(sql)
        batch.load(outcomes, receipts)
        if outcomes:
            batch.apply_outcomes(outcomes, max_attempts)
        if receipts:
            batch.apply_receipts(receipts)
        return batch.write()


class _PartRow:
    __slots__ = ("id", "message_id", "index", "dirty", *_PART_COLUMNS)


class _MessageRow:
    __slots__ = (
        "id",
        "src",
        "dst",
        "reference",
        "parts_count",
        "notify_channel",
        "validity_until",
        "parts",
        "dirty",
        *_MESSAGE_COLUMNS,
    )


class _ReceiptRow:
    """A receipt being stored or matched; ``id`` is None for a new one."""

    __slots__ = ("id", "receipt", "part", "matched_at")

    def __init__(self, receipt: ReceiptIn, part: _PartRow | None, matched_at, id_=None):
        self.id = id_
        self.receipt = receipt
        self.part = part
        self.matched_at = matched_at


class _ResultBatch:
    """The parts and messages a batch of results touches, changed in memory, written once."""

    def __init__(self, sql: Sql):
        self.sql = sql
        self.now = timezone.now()
        self.parts: dict[int, _PartRow] = {}
        self.messages: dict[int, _MessageRow] = {}
        self.new_receipts: list[_ReceiptRow] = []
        self.matched_receipts: list[_ReceiptRow] = []
        self.transitions: list[tuple] = []
        self.events: list[tuple] = []
        self.notifications = Notifications()
        self.waiting: list[tuple] = []  # unmatched receipts for this batch's new SMSC ids
        self.wanted: dict[str, str] = {}  # a receipt's match key -> the part's key it matches

    # --- reading ---------------------------------------------------------------------

    def load(self, outcomes: Sequence[SubmitOutcome], receipts: Sequence[ReceiptIn]) -> None:
        """Lock and read every part (and its message) the results may touch."""
        sql = self.sql
        # The keys a waiting receipt may carry for each new SMSC id: every id's own
        # key first, so that an exact match wins over another id's other base.
        keys_by_outcome = [match_keys(o.smsc_id) for o in outcomes if o.smsc_id]
        for keys in keys_by_outcome:
            self.wanted.setdefault(keys[0], keys[0])
        for keys in keys_by_outcome:
            for key in keys[1:]:
                self.wanted.setdefault(key, keys[0])
        if self.wanted:
            # Receipts that overtook their submit_sm_resp (usually none).
            where, params = sql.in_list("match_key", list(self.wanted))
            self.waiting = sql.execute(
                "SELECT id, smsc_id, match_key, stat, message_state, error_code, source_addr, "
                f"destination_addr, raw_text FROM messaging_receipt "
                f"WHERE matched_at IS NULL AND {where} ORDER BY id DESC"
                + (" FOR UPDATE" if sql.postgres else ""),
                params,
            )
        message_ids = {o.message_id for o in outcomes if o.message_id is not None}
        lookups = []  # one indexed lookup per query (an OR of two would scan the table)
        unknown = [o.part_id for o in outcomes if o.message_id is None]
        if unknown:
            lookups.append(sql.in_list("id", unknown))
        keys = {k for r in receipts for k in r.match_keys}
        if self.waiting:
            keys |= set(self.wanted.values())
        if keys:
            lookups.append(sql.in_list("match_key", list(keys)))
        for where, params in lookups:
            message_ids.update(
                r[0]
                for r in sql.execute(
                    f"SELECT message_id FROM messaging_messagepart WHERE {where}", params
                )
            )
        if not message_ids:
            return
        message_ids = sorted(message_ids)
        # By explicit ids: the planner then walks the indexes instead of a join's scan.
        parts_where, params = sql.in_list("p.message_id", message_ids)
        messages_where, more = sql.in_list("m.id", message_ids)
        rows = sql.execute(
            'SELECT p.id, p.message_id, p."index", p.state, p.command_status, p.bind_id, '
            "p.sequence_number, p.lease_until, p.smsc_id, p.match_key, p.submitted_at, p.final_at, "
            "p.next_attempt_at, p.possibly_duplicated, p.error_code, p.attempts, "
            "m.src, m.dst, m.reference, m.parts_count, m.notify_channel, m.validity_until, "
            "m.state, m.updated_at, m.possibly_duplicated, m.command_status, m.error_code, "
            "m.submitted_at, m.final_at "
            "FROM messaging_messagepart p JOIN messaging_message m ON m.id = p.message_id "
            f"WHERE {parts_where} AND {messages_where} "
            'ORDER BY p.message_id, p."index"' + (" FOR UPDATE" if sql.postgres else ""),
            params + more,
        )
        for row in rows:
            part = _PartRow()
            part.id, part.message_id, part.index = row[0], row[1], row[2]
            (
                part.state,
                part.command_status,
                part.bind_id,
                part.sequence_number,
                part.lease_until,
                part.smsc_id,
                part.match_key,
                part.submitted_at,
                part.final_at,
                part.next_attempt_at,
                part.possibly_duplicated,
                part.error_code,
                part.attempts,
            ) = row[3:16]
            part.dirty = False
            self.parts[part.id] = part
            message = self.messages.get(part.message_id)
            if message is None:
                message = _MessageRow()
                message.id = part.message_id
                (
                    message.src,
                    message.dst,
                    message.reference,
                    message.parts_count,
                    message.notify_channel,
                    message.validity_until,
                    message.state,
                    message.updated_at,
                    message.possibly_duplicated,
                    message.command_status,
                    message.error_code,
                    message.submitted_at,
                    message.final_at,
                ) = row[16:]
                message.parts = []
                message.dirty = False
                self.messages[message.id] = message
            message.parts.append(part)

    # --- what the SMSC said ------------------------------------------------------------

    def apply_outcomes(self, outcomes: Sequence[SubmitOutcome], max_attempts: int) -> None:
        """As ``record_submit_outcomes``: the parts' new states, waiting receipts, settling."""
        now = self.now
        touched: set[int] = set()
        for outcome in outcomes:
            part = self.parts.get(outcome.part_id)
            if part is None or part.state != State.SUBMITTING:
                # Already settled (e.g. its receipt overtook the response): only keep the id.
                if part is not None and outcome.smsc_id and not part.smsc_id:
                    part.smsc_id, part.match_key = outcome.smsc_id, match_key(outcome.smsc_id)
                    part.dirty = True
                continue
            part.command_status = outcome.command_status
            part.bind_id = outcome.bind_id
            part.sequence_number = outcome.sequence
            part.lease_until = None
            kind = outcome.outcome
            if kind == SubmitOutcome.SUBMITTED:
                part.state = State.SUBMITTED
                part.smsc_id, part.match_key = outcome.smsc_id, match_key(outcome.smsc_id)
                part.submitted_at = now
            elif kind == SubmitOutcome.FAILED:
                part.state = State.FAILED
                part.final_at = now
            elif kind == SubmitOutcome.UNSENT:
                # Claimed but never sent: back to the queue as it was.
                part.state = State.QUEUED
                part.next_attempt_at = now
                part.attempts = max(0, part.attempts - 1)
            else:
                retry_at = outcome.retry_at or now
                validity = aware(self.messages[part.message_id].validity_until)
                if kind == SubmitOutcome.UNKNOWN:
                    # It may have reached the SMSC: send again, and say so.
                    part.possibly_duplicated = True
                if validity is not None and retry_at > validity:
                    part.state = State.EXPIRED
                    part.final_at = now
                elif part.attempts >= max_attempts:
                    part.state = State.FAILED
                    part.final_at = now
                else:
                    part.state = State.QUEUED
                    part.next_attempt_at = retry_at
            part.dirty = True
            touched.add(part.message_id)
        if self.waiting:
            touched |= self._match_waiting()
        self.settle(touched, {o.part_id: o for o in outcomes})

    def _match_waiting(self) -> set[int]:
        """Attach receipts kept unmatched to the parts that just got their SMSC id."""
        by_key = {p.match_key: p for p in self._parts_in_order() if p.match_key}
        matched = []
        for row in self.waiting:
            receipt_id, smsc_id, key, stat, state, error, source, destination, text = row
            part = by_key.get(self.wanted[key])
            if part is None:
                continue
            receipt = ReceiptIn(
                smsc_id=smsc_id,
                match_keys=(key,),
                stat=stat,
                message_state=state,
                error_code=error,
                submitted_date=None,
                done_date=None,
                source_addr=source,
                destination_addr=destination,
                raw_text=text,
                tlvs={},
            )
            matched.append(_ReceiptRow(receipt, part, self.now, receipt_id))
        self.matched_receipts += matched
        return self._apply(matched)

    def apply_receipts(self, receipts: Sequence[ReceiptIn]) -> None:
        """As ``store_receipts``: keep every receipt, match, move parts, settle."""
        by_key = {p.match_key: p for p in self._parts_in_order() if p.match_key}
        rows = []
        for receipt in receipts:
            part = next((by_key[k] for k in receipt.match_keys if k in by_key), None)
            rows.append(_ReceiptRow(receipt, part, self.now if part else None))
            if part is None:
                logger.info("receipt for unknown id %s kept unmatched", receipt.smsc_id)
        self.new_receipts += rows
        self.settle(self._apply([r for r in rows if r.part is not None]))

    def _parts_in_order(self) -> list[_PartRow]:
        # The ORM read parts by (message_id, index): the last one with an id wins.
        return [p for m in sorted(self.messages) for p in self.messages[m].parts]

    def _apply(self, rows: list[_ReceiptRow]) -> set[int]:
        """Move matched parts to the state their receipt reports; one event each."""
        now = self.now
        touched: set[int] = set()
        for row in rows:
            receipt, part = row.receipt, row.part
            message = self.messages[part.message_id]
            new_state = RECEIPT_STATE.get(receipt.message_state or 0)
            if new_state and not is_final(part.state):
                part.state = new_state
                part.final_at = now
                part.error_code = receipt.error_code
                if part.submitted_at is None:
                    part.submitted_at = now
                part.dirty = True
                touched.add(part.message_id)
            self.events.append(
                (
                    "receipt",
                    message.id,
                    {
                        "type": "receipt",
                        "src": receipt.source_addr,
                        "dst": receipt.destination_addr,
                        "text": receipt.raw_text,
                        "id": str(message.id),
                        "message_id": receipt.smsc_id,
                        "state": receipt.stat,
                        "error_code": receipt.error_code,
                        "part": part.index,
                        "parts": message.parts_count,
                        "reference": message.reference,
                    },
                )
            )
        return touched

    def settle(
        self, message_ids: set[int], outcomes_by_part: dict[int, SubmitOutcome] | None = None
    ) -> None:
        """Derive each message's state from its parts and record what changed."""
        now = self.now
        for message_id in sorted(message_ids):
            message = self.messages[message_id]
            result = _settlement(
                message.state,
                message.possibly_duplicated,
                message.submitted_at,
                bool(message.notify_channel),
                [
                    (p.id, p.state, p.command_status, p.error_code, p.possibly_duplicated)
                    for p in message.parts
                ],
                outcomes_by_part,
                "",
                now,
            )
            if result.notify:
                self.notifications.waiters[message.notify_channel].append(
                    result.answer(
                        message_id, message.command_status, [p.smsc_id for p in message.parts]
                    )
                )
            if not result.fields:
                continue
            old_state = message.state
            for name, value in result.fields.items():
                setattr(message, name, value)
            message.dirty = True
            if result.new_state != old_state:
                self.transitions.append(
                    (message_id, old_state, result.new_state, result.status, result.note[:200])
                )
                self.events.append(
                    (
                        "status",
                        message_id,
                        _status_payload(
                            message_id,
                            message.src,
                            message.dst,
                            message.reference,
                            message.command_status,
                            message.error_code,
                            result.new_state,
                        ),
                    )
                )

    # --- writing -----------------------------------------------------------------------

    def write(self) -> Notifications:
        """Every change in one round trip to the database (one statement per table)."""
        with self.sql.pipeline():
            self._write_rows()
        if self.events:
            self.notifications.last_event_id = self.sql.last_id("messaging_event")
        return self.notifications

    def _write_rows(self) -> None:
        sql, dt = self.sql, self.sql.dt
        now = dt(self.now)
        sql.update_rows(
            MessagePart,
            _PART_COLUMNS,
            [
                (
                    p.state,
                    p.command_status,
                    p.bind_id,
                    p.sequence_number,
                    dt(p.lease_until),
                    p.smsc_id,
                    p.match_key,
                    dt(p.submitted_at),
                    dt(p.final_at),
                    dt(p.next_attempt_at),
                    p.possibly_duplicated,
                    p.error_code,
                    p.attempts,
                    p.id,
                )
                for p in self.parts.values()
                if p.dirty
            ],
        )
        sql.update_rows(
            Message,
            _MESSAGE_COLUMNS,
            [
                (
                    m.state,
                    dt(m.updated_at),
                    m.possibly_duplicated,
                    m.command_status,
                    m.error_code,
                    dt(m.submitted_at),
                    dt(m.final_at),
                    m.id,
                )
                for m in self.messages.values()
                if m.dirty
            ],
        )
        sql.update_rows(
            Receipt,
            ("part_id", "message_id", "matched_at"),
            [(r.part.id, r.part.message_id, now, r.id) for r in self.matched_receipts],
        )
        at = self.now
        sql.insert(
            Receipt,
            [
                {
                    "smsc_id": r.smsc_id,
                    "match_key": r.match_keys[0] if r.match_keys else "",
                    "part_id": row.part.id if row.part else None,
                    "message_id": row.part.message_id if row.part else None,
                    "stat": r.stat,
                    "message_state": r.message_state,
                    "error_code": r.error_code,
                    "submitted_date": r.submitted_date,
                    "done_date": r.done_date,
                    "source_addr": r.source_addr,
                    "destination_addr": r.destination_addr,
                    "raw_text": r.raw_text,
                    "tlvs": r.tlvs,
                    "received_at": at,
                    "matched_at": at if row.part else None,
                }
                for row in self.new_receipts
                for r in (row.receipt,)
            ],
        )
        sql.insert(
            StateTransition,
            [
                {
                    "message_id": message_id,
                    "from_state": old,
                    "to_state": new,
                    "command_status": status,
                    "detail": detail,
                    "at": at,
                }
                for message_id, old, new, status, detail in self.transitions
            ],
        )
        if self.events:
            sql.insert(
                Event,
                [
                    {"type": kind, "message_id": message_id, "payload": data, "created_at": at}
                    for kind, message_id, data in self.events
                ],
            )


def requeue_abandoned(all_in_flight: bool = False) -> int:
    """Put parts whose worker died (their lease ran out) back in the queue; with
    ``all_in_flight``, every part in flight (the sole worker is starting). They
    may have reached the SMSC, so they are marked possibly duplicated."""
    now = timezone.now()
    query = Q(state=State.SUBMITTING)
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
        _settle_messages({p.message_id for p in parts}, changes)
        changes.flush()
    if parts:
        logger.warning("requeued %d parts whose outcome is unknown", len(parts))
    return len(parts)


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
                state=State.QUEUED, message_id__in=list(overdue)
            )
        )
        if not parts:
            return Notifications()
        for part in parts:
            part.state = State.EXPIRED
            part.final_at = now
        MessagePart.objects.bulk_update(parts, ["state", "final_at"])
        changes = StoreChanges()
        _settle_messages({p.message_id for p in parts}, changes, detail="validity ran out")
        return changes.flush()


# --- settling message states -----------------------------------------------------


@dataclass(frozen=True)
class _Settled:
    """What settling one message decided; no ``fields``: nothing to write."""

    new_state: str
    fields: dict
    status: int | None
    note: str
    notify: bool

    def answer(
        self, message_id: int, command_status: int | None, smsc_ids: list[str | None]
    ) -> SmscAnswer:
        """What the request waiting for this message is told (``command_status``:
        the message's before settling)."""
        status = self.fields.get("command_status", command_status)
        return (message_id, self.new_state, status, smsc_ids)


def _settlement(
    state: str,
    duplicated: bool,
    submitted_at: datetime | None,
    has_waiter: bool,
    parts: Sequence[tuple],
    outcomes_by_part: dict[int, SubmitOutcome] | None,
    detail: str,
    now: datetime,
) -> _Settled:
    """The rule, in one place: a message's state and fields from its parts.

    ``parts`` are (id, state, command_status, error_code, possibly_duplicated)
    in index order. A waiting request is told once the SMSC has answered for
    the message, or when a part went back to the queue after an attempt (it
    answers 202 rather than wait on).
    """
    new_state = derive_message_state(p[1] for p in parts)
    failing = next((p for p in parts if p[1] == State.FAILED), None)
    dup = any(p[4] for p in parts)
    waiting_over = new_state not in (State.QUEUED, State.SUBMITTING) or (
        outcomes_by_part is not None and any(p[0] in outcomes_by_part for p in parts)
    )
    if new_state == state and dup == duplicated:
        notify = has_waiter and waiting_over and new_state != State.SUBMITTING
        return _Settled(new_state, {}, None, "", notify)
    outcome = outcomes_by_part and next(
        (outcomes_by_part[p[0]] for p in parts if p[0] in outcomes_by_part), None
    )
    status = failing[2] if failing else (outcome.command_status if outcome else None)
    note = detail or (outcome.detail if outcome else "")
    fields = {"state": new_state, "updated_at": now, "possibly_duplicated": dup}
    if failing:
        fields["command_status"] = failing[2]
    errors = [p[3] for p in parts if p[3]]
    if errors:
        fields["error_code"] = errors[0]
    if new_state == State.SUBMITTED and submitted_at is None:
        fields["submitted_at"] = now
    if is_final(new_state):
        fields["final_at"] = now
        if submitted_at is None and new_state != State.FAILED:
            fields["submitted_at"] = now
    notify = has_waiter and (
        new_state not in (State.QUEUED, State.SUBMITTING)
        or (new_state == State.QUEUED and waiting_over)
    )
    return _Settled(new_state, fields, status, note, notify)


def _settle_messages(
    message_ids: set[int],
    changes: StoreChanges,
    outcomes_by_part: dict[int, SubmitOutcome] | None = None,
    detail: str = "",
) -> None:
    """Derive each message's state from its parts and record what changed (ORM paths)."""
    if not message_ids:
        return
    part_rows = MessagePart.objects.filter(message_id__in=message_ids).values_list(
        "message_id",
        "id",
        "state",
        "command_status",
        "error_code",
        "possibly_duplicated",
        "smsc_id",
    )
    by_message: dict[int, list[tuple]] = defaultdict(list)
    for row in part_rows:
        by_message[row[0]].append(row[1:])
    messages = Message.objects.select_for_update().in_bulk(list(message_ids))
    for message_id, rows in by_message.items():
        message = messages[message_id]
        result = _settlement(
            message.state,
            message.possibly_duplicated,
            message.submitted_at,
            bool(message.notify_channel),
            rows,
            outcomes_by_part,
            detail,
            changes.now,
        )
        if result.fields:
            if result.new_state != message.state:
                changes.transition(
                    message, result.new_state, command_status=result.status, detail=result.note
                )
                for key, value in result.fields.items():
                    setattr(message, key, value)
                changes.event("status", status_event_payload(message, result.new_state), message_id)
            Message.objects.filter(pk=message_id).update(**result.fields)
        if result.notify:
            changes.notifications.waiters[message.notify_channel].append(
                result.answer(message_id, message.command_status, [row[5] for row in rows])
            )


# --- incoming messages -------------------------------------------------------------


def store_fragments(
    fragments: Sequence[FragmentIn], default_alphabet: str = "gsm7"
) -> Notifications:
    """Keep incoming deliver_sm parts; assemble the messages that are complete."""
    if not fragments:
        return Notifications()
    with transaction.atomic():
        changes = StoreChanges()
        rows = IncomingFragment.objects.bulk_create(
            [
                IncomingFragment(
                    src=f.src,
                    dst=f.dst,
                    data_coding=f.data_coding,
                    reference=f.reference,
                    total=f.total,
                    seq=f.seq,
                    payload=f.payload,
                    received_at=changes.now,
                )
                for f in fragments
            ]
        )
        singles = [r for r in rows if r.reference is None or r.total <= 1]
        for row in singles:
            _assemble([row], changes, default_alphabet)
        keys = {(r.src, r.dst, r.reference, r.total) for r in rows if r not in singles}
        for src, dst, reference, total in keys:
            group = list(
                IncomingFragment.objects.filter(
                    incoming__isnull=True, src=src, dst=dst, reference=reference, total=total
                )
            )
            if len({g.seq for g in group}) >= total:
                _assemble(group, changes, default_alphabet)
        return changes.flush()


def assemble_stale_fragments(older_than: float, default_alphabet: str = "gsm7") -> Notifications:
    """Deliver what arrived of long messages whose other parts never came."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    with transaction.atomic():
        changes = StoreChanges()
        stale = IncomingFragment.objects.filter(incoming__isnull=True, received_at__lt=cutoff)
        keys = set(stale.values_list("src", "dst", "reference", "total"))
        for src, dst, reference, total in keys:
            group = list(
                IncomingFragment.objects.select_for_update().filter(
                    incoming__isnull=True, src=src, dst=dst, reference=reference, total=total
                )
            )
            if group:
                _assemble(group, changes, default_alphabet)
        return changes.flush()


def _assemble(rows: list[IncomingFragment], changes: StoreChanges, default_alphabet: str) -> None:
    first = rows[0]
    assembled = assemble(
        [
            Fragment(
                reference=r.reference or 0,
                total=r.total,
                seq=r.seq,
                payload=bytes(r.payload),
                data_coding=r.data_coding,
            )
            for r in rows
        ],
        default_alphabet=default_alphabet,
    )
    incoming = IncomingMessage.objects.create(
        src=first.src,
        dst=first.dst,
        # An SMS with a NUL is garbled anyway.
        text=storable_text(assembled.text or ""),
        binary_hex=assembled.binary_hex or "",
        data_coding=first.data_coding,
        parts_expected=assembled.parts_expected,
        parts_received=assembled.parts_received,
        complete=assembled.complete,
        received_at=changes.now,
    )
    IncomingFragment.objects.filter(id__in=[r.pk for r in rows]).update(incoming=incoming)
    changes.event(
        "mo",
        {
            "type": "mo",
            "src": incoming.src,
            "dst": incoming.dst,
            "text": incoming.text,
            "incoming_id": str(incoming.pk),
            "data_coding": incoming.data_coding,
            "binary": incoming.binary_hex or None,
            "parts": incoming.parts_expected,
            "complete": incoming.complete,
        },
    )
