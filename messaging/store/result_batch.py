"""A batch of results: the parts and messages it touches, changed in memory, written once."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.utils import timezone

from messaging.event_payloads import receipt_payload, status_payload
from messaging.settlement import settle
from messaging.states import RECEIPT_STATE, State, can_transition, check_transition
from messaging.store.backends import Sql, aware
from messaging.store.result_rows import (
    WaitingReceipt,
    _MessageRow,
    _PartRow,
    _ReceiptRow,
    messages_touched,
    read_parts,
    receipts_waiting,
    wanted_keys,
    write_rows,
)
from messaging.store.types import Notifications, ReceiptIn, SubmitOutcome
from smpp.smsc_ids import IdStyle, match_key

logger = logging.getLogger(__name__)


class _ResultBatch:
    """The parts and messages a batch of results touches, changed in memory, written once."""

    def __init__(self, sql: Sql, connector: str = "", id_style: str = IdStyle.AUTO):
        self.sql = sql
        self.connector = connector  # whose SMSC answered: ids and receipts are its own
        self.id_style = id_style  # how that SMSC writes its ids (smpp.smsc_ids.IdStyle)
        self.now = timezone.now()
        self.parts: dict[int, _PartRow] = {}
        self.messages: dict[int, _MessageRow] = {}
        self.new_receipts: list[_ReceiptRow] = []
        self.matched_receipts: list[_ReceiptRow] = []
        self.transitions: list[tuple] = []
        self.events: list[tuple] = []
        self.notifications = Notifications()
        self.waiting: list[WaitingReceipt] = []  # unmatched receipts for this batch's new SMSC ids
        self.wanted: dict[str, str] = {}  # a receipt's match key -> the part's key it matches

    # --- reading ---------------------------------------------------------------------

    def load(self, outcomes: Sequence[SubmitOutcome], receipts: Sequence[ReceiptIn]) -> None:
        """Lock and read every part (and its message) the results may touch."""
        self.wanted = wanted_keys(outcomes, self.id_style)
        if self.wanted:
            self.waiting = receipts_waiting(self.sql, list(self.wanted), self.connector)
        keys = {k for r in receipts for k in r.match_keys}
        if self.waiting:
            keys |= set(self.wanted.values())
        message_ids = messages_touched(self.sql, outcomes, keys, self.connector)
        if message_ids:
            self.parts, self.messages = read_parts(self.sql, message_ids)

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
                    part.connector = self.connector
                    part.dirty = True
                continue
            part.command_status = outcome.command_status
            part.bind_id = outcome.bind_id
            if outcome.outcome != SubmitOutcome.UNSENT:
                part.connector = self.connector
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
            check_transition(State.SUBMITTING, part.state)
            part.dirty = True
            touched.add(part.message_id)
        if self.waiting:
            touched |= self._match_waiting()
        self.settle(touched, {o.part_id: o for o in outcomes})

    def _match_waiting(self) -> set[int]:
        """Attach receipts kept unmatched to the parts that just got their SMSC id."""
        by_key = self._parts_by_key()
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
        by_key = self._parts_by_key()
        rows = []
        for receipt in receipts:
            part = next((by_key[k] for k in receipt.match_keys if k in by_key), None)
            rows.append(_ReceiptRow(receipt, part, self.now if part else None))
            if part is None:
                logger.info("receipt for unknown id %s kept unmatched", receipt.smsc_id)
        self.new_receipts += rows
        self.settle(self._apply([r for r in rows if r.part is not None]))

    def _parts_by_key(self) -> dict[str, _PartRow]:
        """This connector's parts with an SMSC id, by its match key; the ORM read parts
        by (message_id, index): the last one with a key wins."""
        return {
            p.match_key: p
            for m in sorted(self.messages)
            for p in self.messages[m].parts
            if p.match_key and p.connector == self.connector
        }

    def _apply(self, rows: list[_ReceiptRow]) -> set[int]:
        """Move matched parts to the state their receipt reports; one event each."""
        now = self.now
        touched: set[int] = set()
        for row in rows:
            receipt, part = row.receipt, row.part
            message = self.messages[part.message_id]
            new_state = RECEIPT_STATE.get(receipt.message_state or 0)
            if new_state and can_transition(part.state, new_state):
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
                    receipt_payload(
                        receipt.source_addr,
                        receipt.destination_addr,
                        receipt.raw_text,
                        message.id,
                        receipt.smsc_id,
                        receipt.stat,
                        receipt.error_code,
                        part.index,
                        message.parts_count,
                        message.reference,
                        self.connector,
                    ),
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
            result = settle(
                message.state,
                message.possibly_duplicated,
                message.submitted_at,
                bool(message.notify_channel),
                message.parts,
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
                        status_payload(
                            message_id,
                            message.src,
                            message.dst,
                            message.reference,
                            message.command_status,
                            message.error_code,
                            result.new_state,
                            self.connector,
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
        write_rows(
            self.sql,
            self.now,
            (self.parts.values(), self.messages.values()),
            (self.matched_receipts, self.new_receipts),
            self.transitions,
            self.events,
            self.connector,
        )
