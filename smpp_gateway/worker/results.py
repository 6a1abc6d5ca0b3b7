"""Writing what the SMSC answered to the store, in batches: one transaction a batch.

Submit results and receipts go in one transaction; should it fail (a receipt
the database refuses, say), they are tried apart, so that one bad deliver_sm
never holds up the results of the submits. A deliver_sm is answered only
after what it carried is committed; the bells ring after the write, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DataError, IntegrityError

from messaging import store
from messaging.notify import publish
from messaging.store import FragmentIn, Notifications, ReceiptIn, SubmitOutcome
from smpp.command_status import ESME_RX_P_APPN, ESME_RX_T_APPN

if TYPE_CHECKING:
    from messaging.orm_thread import DatabaseThread
    from smpp_gateway.worker.config import WorkerConfig
    from smpp_gateway.worker.link import Link
    from smpp_gateway.worker.receipt_wait import ReceiptWait

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker

RECEIVER_RETRY_LATER = ESME_RX_T_APPN  # the SMSC keeps it and redelivers
RECEIVER_PERMANENT = ESME_RX_P_APPN  # we can never take it, resending cannot help
# Errors that come from the data itself (a value the database refuses): the same
# item fails the same way each time, so it is not tried again. Anything else
# (the database down, a lock) is transient: the item waits, or the SMSC resends.
PERMANENT_ERRORS = (DataError, IntegrityError, ValueError, TypeError, OverflowError)


class Pending:
    """What the session produced since the last write to the store.

    The parts that produce it append to the lists and set ``wanted`` (the
    writer's wake-up); plain lists, as the hot path needs no more.
    """

    __slots__ = ("outcomes", "receipts", "fragments", "wanted", "awaited")

    def __init__(self) -> None:
        self.outcomes: list[SubmitOutcome] = []
        # An API request waits for one of the outcomes: written without a pause.
        self.awaited = False
        # (what the deliver_sm carried, its sequence, the session to answer on)
        self.receipts: list[tuple[ReceiptIn, int, Any]] = []
        self.fragments: list[tuple[FragmentIn, int, Any]] = []
        self.wanted = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.receipts or self.fragments)

    def take(self, limit: int) -> tuple[list, list, list]:
        """Up to ``limit`` items of each kind (outcomes, receipts, fragments), removed
        from here."""
        taken = (self.outcomes[:limit], self.receipts[:limit], self.fragments[:limit])
        del self.outcomes[:limit], self.receipts[:limit], self.fragments[:limit]
        self.awaited = self.awaited and bool(self.outcomes)  # one may still be left
        return taken


class ResultWriter:
    """Writes ``Pending`` to the store, answers the deliver_sm, rings the bells."""

    def __init__(
        self,
        config: WorkerConfig,
        db: DatabaseThread,
        link: Link,
        pending: Pending,
        receipt_wait: ReceiptWait,
    ) -> None:
        self.config = config
        self.db = db
        self.link = link
        self.pending = pending
        self.receipt_wait = receipt_wait
        self.answering = 0  # deliver_sm in the write under way
        self._publishing: asyncio.Future | None = None  # the last bells being rung

    @property
    def unanswered(self) -> int:
        """deliver_sm received and not yet answered."""
        pending = self.pending
        return self.answering + len(pending.receipts) + len(pending.fragments)

    async def flush_loop(self) -> None:
        """Write whenever something is pending, after a moment for a batch to gather;
        at once when an API request waits for a result (its answer is due after the
        write, and the moment was a third of a waiting request's time at one client)."""
        wanted = self.pending.wanted
        while True:
            await wanted.wait()
            if not self.pending.awaited:
                await asyncio.sleep(self.config.flush_interval)  # let a batch gather
            session = self.link.session
            if session is not None:
                # ... with every deliver_sm already received: the SMSC sends no more
                # until these are answered, so a write that leaves some behind halves
                # the receipts per write (measured: 2,400 -> 1,800 msg/s end to end).
                await session.delivers_read()
            wanted.clear()
            await self.flush()

    async def flush_all(self) -> None:
        """Everything, held results included, written; the bells rung."""
        self.receipt_wait.release(everything=True)
        while self.pending:
            await self.flush()
        if self._publishing is not None:
            await self._publishing

    async def flush(self) -> None:
        """Write a batch of what is pending, then answer the SMSC and ring the bells."""
        outcomes, delivered, fragments = self.pending.take(self.config.flush_batch)
        self.answering = len(delivered) + len(fragments)
        if self.pending:
            self.pending.wanted.set()  # more than one batch's worth: go on at once
        if not (outcomes or delivered or fragments):
            return
        notes = Notifications()
        receipts = [item for item, _, _ in delivered]
        receipt_statuses = [0] * len(receipts)
        try:
            notes.merge(
                await self.db.run(
                    store.record_results,
                    outcomes,
                    receipts,
                    self.config.max_attempts,
                    self.config.connector,
                    self.config.smsc_id_style,
                )
            )
        except Exception:
            logger.warning("could not write a batch of results; trying its parts apart")
            if outcomes:
                await self.record_outcomes_apart(outcomes, notes)
            receipt_statuses = await self.store_each(receipts, store_receipts, notes)
        self.answer(delivered, receipt_statuses)
        self.answering = len(fragments)
        if fragments:
            statuses = await self.store_each(
                [f for f, _, _ in fragments], self.store_fragments, notes
            )
            self.answer(fragments, statuses)
        self.answering = 0
        self.publish(notes)

    async def record_outcomes_apart(
        self, outcomes: list[SubmitOutcome], notes: Notifications
    ) -> None:
        """Submit results whose batch failed: alone, then one by one when the data is
        at fault. A database that is down keeps them all, to be tried again in a second."""
        if len(outcomes) > 1:
            try:
                notes.merge(await self._record(outcomes))
                return
            except PERMANENT_ERRORS as exc:
                logger.warning("a submit result cannot be written (%s); one by one now", exc)
            except Exception:
                logger.exception("could not record %d submit results; will retry", len(outcomes))
                await self._requeue(outcomes)
                return
        for outcome in outcomes:
            await self._record_one(outcome, notes)

    async def _record_one(self, outcome: SubmitOutcome, notes: Notifications) -> None:
        """One the database refuses becomes a failure of its part (recorded with the
        reason); if even that cannot be written it is dropped, logged, and its part
        comes back when its lease runs out."""
        try:
            notes.merge(await self._record([outcome]))
            return
        except PERMANENT_ERRORS as exc:
            reason = exc
        except Exception:
            logger.exception("could not record a submit result; will retry")
            await self._requeue([outcome])
            return
        failed = SubmitOutcome(
            part_id=outcome.part_id,
            message_id=outcome.message_id,
            outcome=SubmitOutcome.FAILED,
            command_status=outcome.command_status,
            bind_id=outcome.bind_id,
            detail=f"the SMSC's answer cannot be stored: {reason}",
        )
        logger.error(
            "message %s part id %d: the SMSC's answer %r cannot be stored (%s); the part is failed",
            outcome.message_id,
            outcome.part_id,
            outcome,
            reason,
            extra={"message_id": outcome.message_id},
        )
        try:
            notes.merge(await self._record([failed]))
        except Exception:
            logger.exception(
                "message %s part id %d: not even its failure can be stored; it goes back "
                "to the queue when its lease runs out",
                outcome.message_id,
                outcome.part_id,
            )

    async def _requeue(self, outcomes: list[SubmitOutcome]) -> None:
        """Results the database could not take now: first in line for the next write,
        in a second."""
        self.pending.outcomes[:0] = outcomes
        await asyncio.sleep(1)
        self.pending.wanted.set()

    async def _record(self, outcomes: list[SubmitOutcome]) -> Notifications:
        """Submit results alone (no receipts), from this worker's connector."""
        config = self.config
        return await self.db.run(
            store.record_results,
            outcomes,
            (),
            config.max_attempts,
            config.connector,
            config.smsc_id_style,
        )

    async def store_each(
        self, items: list, write: Callable[[list, str], Notifications], notes: Notifications
    ) -> list[int]:
        """Store deliver_sm contents; the deliver_sm_resp status of each.

        All in one transaction first. If the database refuses the data, each is
        stored on its own, so one bad deliver_sm never takes the good ones of its
        batch down with it: one the store can never hold is refused for good
        (ESME_RX_P_APPN) and logged whole, never "retry" for ever. A database that
        is down gets them all answered "retry" (0x64): the SMSC keeps them.
        """
        if not items:
            return []
        try:
            notes.merge(await self.db.run(write, items, self.config.connector))
            return [0] * len(items)
        except PERMANENT_ERRORS as exc:
            if len(items) == 1:
                logger.error(
                    "deliver_sm refused for good, the store cannot hold %r: %s", items[0], exc
                )
                return [RECEIVER_PERMANENT]
            logger.warning(
                "could not store %d deliver_sm (%s); storing them one by one", len(items), exc
            )
        except Exception:
            logger.exception("could not store %d deliver_sm; the SMSC will resend", len(items))
            return [RECEIVER_RETRY_LATER] * len(items)
        statuses: list[int] = []
        for item in items:
            statuses += await self.store_each([item], write, notes)
        return statuses

    def publish(self, notes: Notifications) -> None:
        """Ring the bells in the background, in order: the next write need not wait."""
        if notes.last_event_id is None and not notes.waiters:
            return
        previous = self._publishing

        async def ring() -> None:
            if previous is not None:
                await previous
            await publish(notes)

        self._publishing = asyncio.ensure_future(ring())

    def answer(self, delivered: list[tuple[Any, int, Any]], statuses: list[int]) -> None:
        """deliver_sm_resp on the session each deliver_sm came in on; after a
        reconnection the old sequence numbers mean nothing: the SMSC resends."""
        current = self.link.session
        for (_, sequence, session), status in zip(delivered, statuses, strict=True):
            if session is not None and session is current:
                session.respond_deliver(sequence, status)

    def store_fragments(self, fragments: list[FragmentIn], connector: str) -> Notifications:
        return store.store_fragments(fragments, self.config.default_alphabet, connector)


def store_receipts(receipts: list[ReceiptIn], connector: str) -> Notifications:
    """Receipts alone, from ``connector``'s SMSC (``ResultWriter.store_each``)."""
    return store.record_results((), receipts, connector=connector)
