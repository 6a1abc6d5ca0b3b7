"""Reads and writes of the message store, in batches.

Everything that changes a message goes through here, so that each change is
recorded with its transition and its event in one transaction. The functions
are synchronous (Django's ORM); the worker calls them from one database thread,
the API from its request threads. They return the notifications to publish
*after* commit; publishing is the caller's job (see ``messaging.notify``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import (
    ConcatReference,
    Event,
    IncomingFragment,
    IncomingMessage,
    Message,
    MessagePart,
    Receipt,
    StateTransition,
)
from .outbound import split_for_smsc
from .reassembly import Fragment, assemble
from .splitting import SplitResult
from .states import RECEIPT_STATE, State, derive_message_state, is_final

logger = logging.getLogger(__name__)


# --- what goes in --------------------------------------------------------------


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


@dataclass(frozen=True)
class SubmitOutcome:
    """What became of one submit_sm."""

    SUBMITTED = "submitted"  # the SMSC accepted it (status 0)
    FAILED = "failed"  # the SMSC refused it for good
    RETRY = "retry"  # refused for now (throttled, queue full...): try again later
    UNKNOWN = "unknown"  # no answer (timeout, lost link): requeue, maybe duplicated

    part_id: int
    outcome: str
    command_status: int | None = None
    smsc_id: str = ""
    bind_id: str = ""
    sequence: int | None = None
    retry_at: datetime | None = None
    detail: str = ""


@dataclass(frozen=True)
class ReceiptIn:
    """A delivery receipt as the worker read it off the wire (already parsed)."""

    smsc_id: str
    smsc_id_variants: tuple[str, ...]
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


@dataclass
class Notifications:
    """Bells to ring after commit."""

    last_event_id: int | None = None
    # channel name -> message ids whose wait is over
    waiters: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def merge(self, other: Notifications) -> None:
        if other.last_event_id is not None:
            self.last_event_id = max(self.last_event_id or 0, other.last_event_id)
        for channel, ids in other.waiters.items():
            self.waiters[channel].extend(ids)


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
    return {
        "type": "status",
        "id": str(message.pk),
        "src": message.src,
        "dst": message.dst,
        "text": "",
        "state": state,
        "reference": message.reference,
        "command_status": message.command_status,
        "error_code": message.error_code,
    }


# --- creating messages ---------------------------------------------------------


def _allocate_reference(dst: str) -> int:
    """Next concatenation reference for ``dst``, rising so that the parts of
    consecutive long messages to one handset never share a reference."""
    row, _ = ConcatReference.objects.select_for_update().get_or_create(dst=dst)
    value = row.next_value
    ConcatReference.objects.filter(pk=row.pk).update(next_value=(value + 1) % 65536)
    return value


def create_messages(new_messages: Sequence[NewMessage], notify_channel: str = "") -> list[Message]:
    """Store messages and their parts as queued; returns the saved messages."""
    with transaction.atomic():
        changes = StoreChanges()
        messages = []
        for new in new_messages:
            split = new.split
            if len(split.parts) > 1 and split.parts[0].use_payload is False:
                # Long: cut again with a reference of its own for this handset.
                split = split_for_smsc(
                    new.text, new.requested_encoding, _allocate_reference(new.dst)
                )
            messages.append(
                Message(
                    src=new.src,
                    src_ton=new.src_ton,
                    src_npi=new.src_npi,
                    dst=new.dst,
                    dst_ton=new.dst_ton,
                    dst_npi=new.dst_npi,
                    text=new.text,
                    encoding=split.encoding,
                    requested_encoding=new.requested_encoding,
                    data_coding=split.data_coding,
                    ucs2_forced_by="".join(split.ucs2_forced_by)[:64],
                    parts_count=len(split.parts),
                    register=new.register,
                    priority=new.priority,
                    schedule_at=new.schedule_at,
                    validity_until=new.validity_until,
                    reference=new.reference,
                    callback_url=new.callback_url,
                    idempotency_key=new.idempotency_key,
                    request_hash=new.request_hash,
                    api_key_id=new.api_key_id,
                    notify_channel=notify_channel,
                    created_at=changes.now,
                    updated_at=changes.now,
                )
            )
            messages[-1]._split = split
        Message.objects.bulk_create(messages)
        parts = []
        for message in messages:
            due = message.schedule_at or changes.now
            for spec in message._split.parts:
                parts.append(
                    MessagePart(
                        message_id=message.pk,
                        index=spec.index,
                        short_message=spec.short_message,
                        esm_class=spec.esm_class,
                        sar_ref=spec.sar[0] if spec.sar else None,
                        sar_total=spec.sar[1] if spec.sar else None,
                        sar_seq=spec.sar[2] if spec.sar else None,
                        use_payload=spec.use_payload,
                        next_attempt_at=due,
                    )
                )
            changes.transitions.append(
                StateTransition(
                    message_id=message.pk, to_state=State.QUEUED, at=changes.now, detail="stored"
                )
            )
        MessagePart.objects.bulk_create(parts)
        changes.flush()
    return messages


# --- the worker's side -----------------------------------------------------------


def claim_parts(worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedPart]:
    """Take up to ``limit`` due parts for this worker, oldest first.

    On PostgreSQL the rows are locked with SKIP LOCKED, so several workers
    share the queue without taking the same part twice.
    """
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            MessagePart.objects.select_for_update(skip_locked=True)
            .filter(state=State.QUEUED, next_attempt_at__lte=now)
            # Past its validity it expires (expire_overdue) instead of being sent.
            .exclude(message__validity_until__lte=now)
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        MessagePart.objects.filter(id__in=ids).update(
            state=State.SUBMITTING,
            worker=worker_id,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=F("attempts") + 1,
        )
        rows = list(
            MessagePart.objects.filter(id__in=ids)
            .select_related("message")
            .order_by("next_attempt_at", "id")
        )
        changes = StoreChanges()
        moved = {}
        for part in rows:
            message = part.message
            if message.state == State.QUEUED and message.pk not in moved:
                moved[message.pk] = message
                changes.transition(message, State.SUBMITTING)
        if moved:
            Message.objects.filter(id__in=list(moved), state=State.QUEUED).update(
                state=State.SUBMITTING, updated_at=now
            )
        changes.flush()
    return [_claimed(part) for part in rows]


def _claimed(part: MessagePart) -> ClaimedPart:
    m = part.message
    return ClaimedPart(
        part_id=part.pk,
        message_id=m.pk,
        index=part.index,
        src=m.src,
        src_ton=m.src_ton,
        src_npi=m.src_npi,
        dst=m.dst,
        dst_ton=m.dst_ton,
        dst_npi=m.dst_npi,
        data_coding=m.data_coding,
        esm_class=part.esm_class,
        short_message=bytes(part.short_message),
        sar=(part.sar_ref, part.sar_total, part.sar_seq) if part.sar_ref is not None else None,
        use_payload=part.use_payload,
        register=m.register,
        priority=m.priority,
        validity_until=m.validity_until,
        attempts=part.attempts,
    )


def record_submit_outcomes(
    outcomes: Iterable[SubmitOutcome], max_attempts: int = 10
) -> Notifications:
    """Write what the SMSC answered (or did not) for a batch of submits.

    A part that would be tried again fails after ``max_attempts`` and expires
    when the next try would come after its message's validity.
    """
    outcomes = list(outcomes)
    if not outcomes:
        return Notifications()
    with transaction.atomic():
        changes = StoreChanges()
        parts = {
            p.pk: p
            for p in MessagePart.objects.select_for_update(of=("self",))
            .select_related("message")
            .filter(id__in=[o.part_id for o in outcomes])
        }
        touched: set[int] = set()
        updated: list[MessagePart] = []
        for outcome in outcomes:
            part = parts.get(outcome.part_id)
            if part is None or part.state != State.SUBMITTING:
                # Already settled (e.g. its receipt overtook the response): only keep the id.
                if part is not None and outcome.smsc_id and not part.smsc_id:
                    part.smsc_id = outcome.smsc_id
                    updated.append(part)
                continue
            part.command_status = outcome.command_status
            part.bind_id = outcome.bind_id
            part.sequence_number = outcome.sequence
            part.lease_until = None
            if outcome.outcome == SubmitOutcome.SUBMITTED:
                part.state = State.SUBMITTED
                part.smsc_id = outcome.smsc_id
                part.submitted_at = changes.now
            elif outcome.outcome == SubmitOutcome.FAILED:
                part.state = State.FAILED
                part.final_at = changes.now
            else:
                retry_at = outcome.retry_at or changes.now
                validity = part.message.validity_until
                if outcome.outcome == SubmitOutcome.UNKNOWN:
                    # It may have reached the SMSC: send again, and say so.
                    part.possibly_duplicated = True
                if validity is not None and retry_at > validity:
                    part.state = State.EXPIRED
                    part.final_at = changes.now
                elif part.attempts >= max_attempts:
                    part.state = State.FAILED
                    part.final_at = changes.now
                else:
                    part.state = State.QUEUED
                    part.next_attempt_at = retry_at
            updated.append(part)
            touched.add(part.message_id)
        if updated:
            MessagePart.objects.bulk_update(
                updated,
                [
                    "state",
                    "command_status",
                    "bind_id",
                    "sequence_number",
                    "lease_until",
                    "smsc_id",
                    "submitted_at",
                    "final_at",
                    "next_attempt_at",
                    "possibly_duplicated",
                ],
            )
        # Receipts that arrived before their submit_sm_resp can be matched now.
        fresh_ids = [o.smsc_id for o in outcomes if o.smsc_id]
        if fresh_ids:
            touched |= _match_waiting_receipts(fresh_ids, changes)
        _settle_messages(touched, changes, outcomes_by_part={o.part_id: o for o in outcomes})
        return changes.flush()


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
        parts = list(
            MessagePart.objects.select_for_update(skip_locked=True).filter(
                state=State.QUEUED, message__validity_until__lt=now
            )[:1000]
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


# --- receipts --------------------------------------------------------------------


def store_receipts(receipts: Sequence[ReceiptIn]) -> Notifications:
    """Keep every receipt; match those whose part is known; settle their messages.

    A receipt whose id matches no part yet is kept unmatched: its part may be
    waiting for its submit_sm_resp, and ``record_submit_outcomes`` matches it then.
    """
    if not receipts:
        return Notifications()
    with transaction.atomic():
        changes = StoreChanges()
        variants = {v for r in receipts for v in r.smsc_id_variants}
        parts_by_id: dict[str, MessagePart] = {}
        for part in MessagePart.objects.select_for_update().filter(smsc_id__in=variants):
            parts_by_id[part.smsc_id] = part
        rows = []
        for r in receipts:
            part = next((parts_by_id[v] for v in r.smsc_id_variants if v in parts_by_id), None)
            rows.append(
                Receipt(
                    smsc_id=r.smsc_id,
                    part=part,
                    message_id=part.message_id if part else None,
                    stat=r.stat,
                    message_state=r.message_state,
                    error_code=r.error_code,
                    submitted_date=r.submitted_date,
                    done_date=r.done_date,
                    source_addr=r.source_addr,
                    destination_addr=r.destination_addr,
                    raw_text=r.raw_text,
                    tlvs=r.tlvs,
                    received_at=changes.now,
                    matched_at=changes.now if part else None,
                )
            )
        Receipt.objects.bulk_create(rows)
        touched = _apply_receipts([r for r in rows if r.part is not None], changes)
        for row in rows:
            if row.part is None:
                logger.info("receipt for unknown id %s kept unmatched", row.smsc_id)
        _settle_messages(touched, changes)
        return changes.flush()


def _match_waiting_receipts(smsc_ids: list[str], changes: StoreChanges) -> set[int]:
    """Attach unmatched receipts to parts that just got their SMSC id."""
    from smpp_gateway.receipts import smsc_id_variants  # the SMPP id rules live there

    wanted: dict[str, str] = {}
    for smsc_id in smsc_ids:
        for variant in smsc_id_variants(smsc_id):
            wanted.setdefault(variant, smsc_id)
    waiting = list(
        Receipt.objects.select_for_update().filter(matched_at__isnull=True, smsc_id__in=wanted)
    )
    if not waiting:
        return set()
    parts = {
        p.smsc_id: p
        for p in MessagePart.objects.select_for_update().filter(smsc_id__in=set(wanted.values()))
    }
    matched = []
    for receipt in waiting:
        part = parts.get(wanted[receipt.smsc_id])
        if part is None:
            continue
        receipt.part = part
        receipt.message_id = part.message_id
        receipt.matched_at = changes.now
        matched.append(receipt)
    Receipt.objects.bulk_update(matched, ["part", "message", "matched_at"])
    return _apply_receipts(matched, changes)


def _apply_receipts(receipts: list[Receipt], changes: StoreChanges) -> set[int]:
    """Move matched parts to the state their receipt reports; one event each."""
    touched: set[int] = set()
    changed_parts: dict[int, MessagePart] = {}
    messages = Message.objects.in_bulk({r.message_id for r in receipts})
    for receipt in receipts:
        part = changed_parts.get(receipt.part.pk, receipt.part)
        message = messages[receipt.message_id]
        new_state = RECEIPT_STATE.get(receipt.message_state or 0)
        if new_state and not is_final(part.state):
            part.state = new_state
            part.final_at = changes.now
            part.error_code = receipt.error_code
            if part.submitted_at is None:
                part.submitted_at = changes.now
            changed_parts[part.pk] = part
            touched.add(part.message_id)
        changes.event(
            "receipt",
            {
                "type": "receipt",
                "src": receipt.source_addr,
                "dst": receipt.destination_addr,
                "text": receipt.raw_text,
                "id": str(message.pk),
                "message_id": receipt.smsc_id,
                "state": receipt.stat,
                "error_code": receipt.error_code,
                "part": part.index,
                "parts": message.parts_count,
                "reference": message.reference,
            },
            message_id=message.pk,
        )
    if changed_parts:
        MessagePart.objects.bulk_update(
            list(changed_parts.values()), ["state", "final_at", "error_code", "submitted_at"]
        )
    return touched


# --- settling message states -----------------------------------------------------


def _settle_messages(
    message_ids: set[int],
    changes: StoreChanges,
    outcomes_by_part: dict[int, SubmitOutcome] | None = None,
    detail: str = "",
) -> None:
    """Derive each message's state from its parts and record what changed."""
    if not message_ids:
        return
    part_rows = MessagePart.objects.filter(message_id__in=message_ids).values_list(
        "message_id", "id", "state", "command_status", "error_code", "possibly_duplicated"
    )
    by_message: dict[int, list[tuple]] = defaultdict(list)
    for row in part_rows:
        by_message[row[0]].append(row)
    messages = Message.objects.select_for_update().in_bulk(list(message_ids))
    for message_id, rows in by_message.items():
        message = messages[message_id]
        new_state = derive_message_state(r[2] for r in rows)
        failing = next((r for r in rows if r[2] == State.FAILED), None)
        dup = any(r[5] for r in rows)
        waiting_over = new_state not in (State.QUEUED, State.SUBMITTING) or (
            outcomes_by_part is not None and any(r[1] in outcomes_by_part for r in rows)
        )
        if new_state == message.state and dup == message.possibly_duplicated:
            if message.notify_channel and waiting_over and new_state != State.SUBMITTING:
                changes.notifications.waiters[message.notify_channel].append(message_id)
            continue
        outcome = outcomes_by_part and next(
            (outcomes_by_part[r[1]] for r in rows if r[1] in outcomes_by_part), None
        )
        status = failing[3] if failing else (outcome.command_status if outcome else None)
        note = detail or (outcome.detail if outcome else "")
        fields = {"state": new_state, "updated_at": changes.now, "possibly_duplicated": dup}
        if failing:
            fields["command_status"] = failing[3]
        errors = [r[4] for r in rows if r[4]]
        if errors:
            fields["error_code"] = errors[0]
        if new_state == State.SUBMITTED and message.submitted_at is None:
            fields["submitted_at"] = changes.now
        if is_final(new_state):
            fields["final_at"] = changes.now
            if message.submitted_at is None and new_state != State.FAILED:
                fields["submitted_at"] = changes.now
        if new_state != message.state:
            changes.transition(message, new_state, command_status=status, detail=note)
            for key, value in fields.items():
                setattr(message, key, value)
            changes.event("status", status_event_payload(message, new_state), message_id)
        Message.objects.filter(pk=message_id).update(**fields)
        if message.notify_channel and new_state not in (State.QUEUED, State.SUBMITTING):
            changes.notifications.waiters[message.notify_channel].append(message_id)
        elif message.notify_channel and new_state == State.QUEUED and waiting_over:
            # A retry or a lost link: the waiter answers 202 rather than wait on.
            changes.notifications.waiters[message.notify_channel].append(message_id)


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
        # PostgreSQL text cannot hold NUL; an SMS with one is garbled anyway.
        text=(assembled.text or "").replace("\x00", "\ufffd"),
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
