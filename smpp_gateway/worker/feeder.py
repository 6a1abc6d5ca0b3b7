"""What to claim and when to send it: keeping the window full (``Feeder``).

Parts are claimed ahead into a buffer while the window is filled from it, so a
claim's round trip never leaves the window empty. Whatever was claimed but
never sent goes back to the queue as it was; so does a part that waited for
half its lease (a slow, throttled send rate), before another worker may take
it up. The decisions are the small policies below, each with its reason.

While it waits for work (its last claim found the queue empty), the feeder
takes new parts straight from the API of its own process
(``messaging.handoff``): the embedded set-up's one message a request then
costs no bell and no claim.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer

from messaging import handoff, store
from messaging.notify import WORKER_CHANNEL
from messaging.store import ClaimedPart, SubmitOutcome
from smpp.flow import AdaptiveRate
from smpp.session import LinkError, SMPPSession
from smpp_gateway.submit_fields import submit_fields

if TYPE_CHECKING:
    from messaging.orm_thread import DatabaseThread
    from smpp_gateway.worker.config import WorkerConfig
    from smpp_gateway.worker.receipt_wait import ReceiptWait
    from smpp_gateway.worker.results import Pending, ResultWriter

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker

STORE_WAIT = 0.002  # seconds between two looks at a store that is behind


# --- the policies ------------------------------------------------------------------------


def claim_ahead(claim_batch: int, window: int, rate: float | None) -> int:
    """Parts to keep claimed ahead of the window.

    Two windows ahead (a crash marks the parts it claimed as possibly duplicated:
    keep them few), a second's worth at most (the rate may be low).
    """
    ahead = min(claim_batch, max(2 * window, 100))
    if rate is not None:
        ahead = min(ahead, max(window, int(rate)))
    return ahead


def should_claim(claiming: bool, unsent: int, ahead: int, drained: bool = False) -> bool:
    """Topped up continuously, one claim at a time: under load a claim takes tens of
    ms, and at thousands a second half the buffer was gone before it returned
    (measured: the window ran dry 182 times in 20 s, 40 this way). Not while the
    queue is known empty (``drained``: the last claim found nothing, and no bell
    has rung since): parts handed over meanwhile need no claim after them."""
    return not claiming and not drained and unsent < ahead


def must_take_claim(claim: Future | None, unsent: int) -> bool:
    """Wait for the claim under way when there is nothing else to send, else take
    it in only once it is done."""
    return claim is not None and (not unsent or claim.done())


def store_behind(
    written_later: int, backlog_limit: int, unanswered: int, window: int, late_share: float
) -> bool:
    """Hold sending while results not yet written fill ``backlog_limit``, or while
    receipts come late (after their result was written alone) and as fast as we
    answer them: the SMSC has a queue of them. The store catches up first."""
    return written_later >= backlog_limit or (unanswered >= window and late_share > 0.5)


def stale(deadline: float, now: float) -> bool:
    """A part that waited for half its lease goes back before another worker may
    take it up."""
    return deadline < now


# --- the feeder ------------------------------------------------------------------------------


class Feeder:
    """Claims parts ahead and submits them as the window and the send rate allow."""

    def __init__(
        self,
        config: WorkerConfig,
        worker_id: str,
        claims: DatabaseThread,
        rate: AdaptiveRate,
        pending: Pending,
        receipt_wait: ReceiptWait,
        results: ResultWriter,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.claims = claims  # the thread claims run in
        self.rate = rate
        self.pending = pending
        self.receipt_wait = receipt_wait
        self.results = results
        # (send before, part): claimed, waiting for room in the window
        self.unsent: deque[tuple[float, ClaimedPart]] = deque()
        self._claiming: Future | None = None  # the claim under way (in a database thread)
        # The last claim found the queue empty, and no bell has rung since.
        self._drained = False
        self._running = False  # feeding a session: parts handed over are sent
        self._waiting = False  # waiting for work: parts may be handed over
        self._handed = asyncio.Event()
        self._bell: asyncio.Task | None = None  # listening for the API's bell

    @property
    def lease_seconds(self) -> float:
        return self.config.lease_seconds

    @property
    def connector(self) -> str:
        return self.config.connector

    async def run(self, session: SMPPSession) -> None:
        """Keep ``session``'s window full until the link goes (or this is cancelled)."""
        bucket = self.rate.bucket
        unsent = self.unsent
        self._running, self._drained = True, False
        handoff.offer(self)
        try:
            while True:
                self._start_claim()
                if not unsent and self._claiming is None:  # the queue is empty
                    await self._wait_for_work()
                    continue
                if must_take_claim(self._claiming, len(unsent)) and not await self._take_in():
                    continue
                await session.wait_for_window()
                if self._store_behind():
                    await self._wait_for_store()
                allowed = bucket.take(min(session.window_free, len(unsent)))
                if allowed == 0:
                    await asyncio.sleep(max(0.001, bucket.wait_time()))
                    continue
                if not self._send(session, allowed):
                    return
                await session.drain()
        finally:
            handoff.withdraw(self)
            self._running = False
            if self._bell is not None:
                self._bell.cancel()
                self._bell = None
            self._hand_back()

    def room(self) -> int:
        """Parts this feeder takes from its own process's API now (``PartTaker``):
        only while it waits for work, so nothing queued earlier is overtaken."""
        if not self._waiting:
            return 0
        ahead = claim_ahead(self.config.claim_batch, self.config.session.window, self.rate.rate)
        return max(0, ahead - len(self.unsent))

    def take(self, parts: list[ClaimedPart]) -> None:
        """Parts stored claimed under this worker's lease, handed over after their
        commit: sent next, or, once the link has gone, back to the queue."""
        if not self._running:
            self.release(parts)
            return
        deadline = time.monotonic() + self.config.lease_seconds / 2
        self.unsent.extend((deadline, part) for part in parts)
        self._handed.set()

    def _start_claim(self) -> None:
        """A claim for what the buffer lacks, if one is due (see ``should_claim``)."""
        ahead = claim_ahead(self.config.claim_batch, self.config.session.window, self.rate.rate)
        unsent = len(self.unsent)
        if should_claim(self._claiming is not None, unsent, ahead, self._drained):
            self._claiming = self.claims.submit(
                store.claim_parts,
                self.worker_id,
                ahead - unsent,
                self.config.lease_seconds,
                self.config.connector,
            )

    async def _take_in(self) -> bool:
        """The claim's parts into the buffer; False when there is nothing to send
        (an empty claim: the queue is drained)."""
        parts = await self._take_claim()
        deadline = time.monotonic() + self.config.lease_seconds / 2
        self.unsent.extend((deadline, part) for part in parts)
        if not self.unsent:
            self._drained = True
            return False
        return True

    async def _take_claim(self) -> list[ClaimedPart]:
        """The claim's parts. ``_claiming`` is cleared only once they are taken in (or it
        failed): cancelled here as the link goes, ``_hand_back`` releases them. Dropped,
        they sat claimed until their lease ran out, then went out marked possibly
        duplicated though never sent."""
        assert self._claiming is not None
        try:
            parts = await asyncio.shield(asyncio.wrap_future(self._claiming))
        except Exception:
            self._claiming = None
            logger.exception("could not claim parts; trying again")
            await asyncio.sleep(self.config.poll_interval)
            return []
        self._claiming = None
        return parts

    def _store_behind(self) -> bool:
        window = self.config.session.window
        return store_behind(
            len(self.receipt_wait.held) + len(self.pending.outcomes),
            self.config.backlog_windows * window,
            self.results.unanswered,
            window,
            self.receipt_wait.late_share,
        )

    async def _wait_for_store(self) -> None:
        while self._store_behind():
            await asyncio.sleep(STORE_WAIT)

    def _send(self, session: SMPPSession, allowed: int) -> bool:
        """Submit ``allowed`` parts from the buffer; False when the link has gone."""
        unsent = self.unsent
        now = time.monotonic()
        stale_parts = []
        unsendable = 0
        submit = session.submit
        overrides = self.config.submit_overrides
        for _ in range(allowed):
            deadline, part = unsent.popleft()
            if stale(deadline, now):
                stale_parts.append(part)
                continue
            try:
                submit(part, **submit_fields(part, None, overrides))
            except LinkError:
                unsent.appendleft((deadline, part))
                return False
            except Exception as exc:  # this part only: the loop goes on
                self._fail_unsendable(part, exc, session.bind_id)
                unsendable += 1
        self.rate.sent.add(allowed - len(stale_parts) - unsendable)  # once a batch
        if stale_parts or unsendable:
            self.rate.bucket.give_back(len(stale_parts) + unsendable)
        if stale_parts:
            self.release(stale_parts)
        return True

    def _hand_back(self) -> None:
        """The link has gone: what was claimed and never sent goes back, now or, for a
        claim not taken in, when it ends."""
        self.release([part for _, part in self.unsent])
        self.unsent.clear()
        claiming, self._claiming = self._claiming, None
        if claiming is not None:
            loop = asyncio.get_running_loop()

            def done(future: Future) -> None:
                if not future.cancelled() and future.exception() is None:
                    loop.call_soon_threadsafe(self.release, future.result())

            claiming.add_done_callback(done)

    def release(self, parts: list[ClaimedPart]) -> None:
        """Claimed parts that never left go back to the queue (not as duplicates)."""
        if parts:
            self.pending.outcomes.extend(
                SubmitOutcome(
                    part_id=p.part_id, message_id=p.message_id, outcome=SubmitOutcome.UNSENT
                )
                for p in parts
            )
            self.pending.wanted.set()

    def _fail_unsendable(self, part: ClaimedPart, exc: Exception, bind_id: str) -> None:
        """A part whose submit_sm cannot be built or encoded (an address the field
        cannot carry, say) fails alone, with the reason on its message's record."""
        expected = isinstance(exc, ValueError)  # FieldError and the like: no traceback
        logger.error(
            "message %d part %d cannot be sent, failed: %s",
            part.message_id,
            part.index,
            exc,
            exc_info=None if expected else exc,
            extra={"message_id": part.message_id, "part": part.index},
        )
        self.pending.outcomes.append(
            SubmitOutcome(
                part_id=part.part_id,
                message_id=part.message_id,
                outcome=SubmitOutcome.FAILED,
                # What an SMSC answers such a field with (FieldError), so the API's
                # answer names the field's fault; None for anything else.
                command_status=getattr(exc, "status", None),
                bind_id=bind_id,
                detail=f"cannot be sent: {exc}",
            )
        )
        self.pending.wanted.set()

    async def _wait_for_work(self) -> None:
        """Sleep until the API rings the bell or hands parts over, or the poll
        interval passes. A bell or the interval sends the feeder to the queue
        again; parts handed over do not (they were never queued)."""
        self._handed.clear()  # the buffer is empty: an earlier hand-over was taken
        if self._bell is None:
            self._bell = asyncio.ensure_future(_listen_for_bell())
        handed = asyncio.ensure_future(self._handed.wait())
        self._waiting = True
        try:
            await asyncio.wait(
                (self._bell, handed),
                timeout=self.config.poll_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._waiting = False
            handed.cancel()
        if handed.done() and not handed.cancelled() and not self._bell.done():
            return  # parts handed over; the queue is as empty as it was
        self._drained = False
        if self._bell.done():
            bell, self._bell = self._bell, None
            if not bell.cancelled() and bell.exception() is not None:
                # a broken channel layer: the queue is polled all the same
                logger.warning("worker bell not heard; polling", exc_info=bell.exception())
                await asyncio.sleep(self.config.poll_interval)


async def _listen_for_bell() -> None:
    """Until the API's bell rings (never, without a channel layer)."""
    layer: Any = get_channel_layer()
    if layer is None:
        await asyncio.get_running_loop().create_future()
    await layer.receive(WORKER_CHANNEL)
