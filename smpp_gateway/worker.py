"""The SMPP worker: moves parts from the store to the SMSC and answers back into the store.

It owns one bind (``SMPPSession``) at a time and keeps its window full: it
claims queued parts in batches ahead of need (the next batch is read while
this one is sent), submits them without waiting, and writes responses,
receipts and incoming messages back in batches, one transaction per batch. A
deliver_sm is answered only after what it carried is committed.

Database work runs in threads: one on SQLite (one writer), two on PostgreSQL,
so that claims never queue behind a batch of results (a claim skips rows
another transaction holds, so the two never wait for each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, connection, connections
from django.utils import timezone

from messaging import store
from messaging.health import BOUND, STALLED, LinkHealth
from messaging.models import LinkStatus
from messaging.notify import BELLS, QUERY_CHANNEL, WORKER_CHANNEL, publish
from messaging.store import ClaimedPart, FragmentIn, Notifications, ReceiptIn, SubmitOutcome
from smpp.command_status import (
    BIND_REFUSED,
    ESME_RMSGQFUL,
    ESME_RTHROTTLED,
    Reaction,
    reaction_for,
    status_name,
)
from smpp.flow import AdaptiveRate, RefusalSummary, SubmitRefusals
from smpp.pdu import as_text
from smpp.receipts import submit_id_problem
from smpp.session import BindRefused, BindUnanswered, LinkError, SessionConfig, SMPPSession
from smpp.smsc_ids import match_key
from smpp_gateway.deliver import read_deliver
from smpp_gateway.submit_fields import submit_fields

logger = logging.getLogger("smpp_gateway.worker")

RETRY_DELAYS = {
    Reaction.RETRY_THROTTLED: 1.0,
    Reaction.RETRY_QUEUE_FULL: 10.0,
    Reaction.RETRY_SYSTEM: 5.0,
    Reaction.REBIND: 0.0,
}
RECEIVER_RETRY_LATER = 0x64  # ESME_RX_T_APPN: the SMSC keeps it and redelivers
RECEIVER_PERMANENT = 0x65  # ESME_RX_P_APPN: we can never take it, resending cannot help
# Errors that come from the data itself (a value the database refuses): the same
# item fails the same way each time, so it is not tried again. Anything else
# (the database down, a lock) is transient: the item waits, or the SMSC resends.
PERMANENT_ERRORS = (DataError, IntegrityError, ValueError, TypeError, OverflowError)


class WorkerTaskDied(RuntimeError):
    """A long-running task of the worker ended with an error: ``run()`` raises this
    (after handing back what it held) so that the process exits non-zero."""


SWITCH_INTERVAL = 0.0005  # seconds a thread holds the GIL before it is passed on


@dataclass(frozen=True)
class WorkerConfig:
    session: SessionConfig
    reconnect_delays: tuple[float, ...] = (1, 2, 5, 10, 20, 30)
    claim_batch: int = 500  # most parts claimed at once, and kept ready ahead of the window
    poll_interval: float = 0.5
    flush_interval: float = 0.002
    flush_batch: int = 2000  # most results written in one transaction
    # How long an accepted submit's result may wait for its receipt, so that both
    # are written together (one update of the part and message instead of two).
    receipt_wait: float = 0.1
    # Sent but not yet written (results held or pending), in windows: beyond, wait.
    backlog_windows: int = 3
    receipt_wait_max: int = 50_000  # results held at most (memory), beyond: written at once
    maintenance_interval: float = 1.0
    expire_interval: float = 5.0
    default_alphabet: str = "gsm7"
    reassembly_timeout: float = 60.0
    lease_seconds: float = 60.0
    max_rate: float | None = None
    max_attempts: int = 10
    # A session that refuses every submit (0x14, 0x58, 0x08, no answer...) for this
    # long is reported stalled (not ready) and rebound; 0: never.
    stall_rebind_after: float = 60.0
    refusal_log_interval: float = 10.0  # seconds between two summaries of refusals, at least

    @classmethod
    def from_settings(cls, **overrides: Any) -> WorkerConfig:
        host, _, port = (settings.SMPP_ADDR or "localhost:2775").rpartition(":")
        session = SessionConfig(
            host=host or "localhost",
            port=int(port),
            system_id=settings.SMPP_USER,
            password=settings.SMPP_PASSWD,
            system_type=settings.SMPP_SYSTEM_TYPE,
            tls=settings.SMPP_TLS,
            tls_insecure=settings.SMPP_TLS_INSECURE,
            tls_ca=settings.SMPP_TLS_CA,
            window=settings.SMPP_WINDOW,
            response_timeout=settings.SMPP_RESPONSE_TIMEOUT,
            enquire_link_interval=settings.SMPP_ENQUIRE_LINK_INTERVAL,
            link_timeout=settings.SMPP_LINK_TIMEOUT,
            write_buffer_limit=settings.SMPP_WRITE_BUFFER_LIMIT,
            peer_request_rate=settings.SMPP_PEER_REQUEST_RATE,
            max_unanswered_delivers=settings.SMPP_MAX_UNANSWERED_DELIVERS,
        )
        values = {
            "session": session,
            "reconnect_delays": tuple(settings.SMPP_RECONNECT_DELAYS),
            "default_alphabet": settings.SMPP_DEFAULT_ALPHABET,
            "reassembly_timeout": settings.SMS_INCOMING_REASSEMBLY_TIMEOUT,
            "lease_seconds": max(settings.SMPP_LEASE_SECONDS, settings.SMPP_RESPONSE_TIMEOUT * 2),
            "max_rate": settings.SMPP_MAX_RATE or None,
            "max_attempts": settings.SMPP_MAX_ATTEMPTS,
            "stall_rebind_after": settings.SMPP_STALL_REBIND_AFTER,
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class _Pending:
    """What the session produced since the last write to the store."""

    outcomes: list[SubmitOutcome] = field(default_factory=list)
    # (what the deliver_sm carried, its sequence, the session to answer on)
    receipts: list[tuple[ReceiptIn, int, Any]] = field(default_factory=list)
    fragments: list[tuple[FragmentIn, int, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.receipts or self.fragments)

    def take(self, limit: int) -> _Pending:
        """Up to ``limit`` items of each kind, removed from here."""
        taken = _Pending(self.outcomes[:limit], self.receipts[:limit], self.fragments[:limit])
        del self.outcomes[:limit], self.receipts[:limit], self.fragments[:limit]
        return taken


class SMPPWorker:
    def __init__(self, config: WorkerConfig, worker_id: str | None = None):
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._db_executor = ThreadPoolExecutor(1, thread_name_prefix="smpp-db")
        self._claim_executor: ThreadPoolExecutor | None = None  # PostgreSQL: claims apart
        self._pending = _Pending()
        # (send before, part): claimed, waiting for room in the window
        self._unsent: deque[tuple[float, ClaimedPart]] = deque()
        # SMSC id's match key -> (write by, result): accepted submits waiting for their receipt
        self._held: dict[str, tuple[float, SubmitOutcome]] = {}
        self._held_timer: asyncio.TimerHandle | None = None
        self._answering = 0  # deliver_sm in the write under way
        self._publishing: asyncio.Future | None = None  # the last bells being rung
        self._late_receipts = 0.0  # share of receipts that found no result waiting
        # Ids of receipts that came before their response, and of results whose wait
        # for their receipt ran out.
        self._receipts_seen = _RecentIds(config.receipt_wait)
        self._released = _RecentIds(2.0)
        self._flush_wanted = asyncio.Event()
        self._stopping = asyncio.Event()
        self._session: SMPPSession | None = None
        self.link_state = "disconnected"
        self.rate = AdaptiveRate(config.max_rate)
        self.refusals = SubmitRefusals(config.stall_rebind_after)
        self._died: WorkerTaskDied | None = None  # set when a long-running task died

    # --- the database thread -----------------------------------------------------------

    async def _db(self, func, *args, executor: ThreadPoolExecutor | None = None):
        # Shielded: a caller cancelled as the link goes stops waiting, but what it
        # handed to the database thread still runs. Unshielded, a write of results
        # queued behind other work was dropped, and its parts, though the SMSC had
        # accepted them, went out again once their lease ran out (fault suite).
        future = self._submit_db(func, *args, executor=executor)
        return await asyncio.shield(asyncio.wrap_future(future))

    def _submit_db(self, func, *args, executor: ThreadPoolExecutor | None = None):
        def call():
            try:
                return func(*args)
            except Exception:
                # A broken connection must not poison the next call (in this thread).
                connections["default"].close()
                raise

        return (executor or self._db_executor).submit(call)

    # --- life cycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming, drain the window, unbind (see ``run``)."""
        self._stopping.set()

    async def run(self) -> None:
        """Keep a bind up until ``stop()``; reconnect with capped backoff."""
        # The database threads run Python too (building and reading rows); the event
        # loop, which refills the window as responses come in, must not wait the
        # default 5 ms for its turn each time.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        await self._db(close_old_connections)
        sole = self._is_sole_worker()
        if not sole:
            self._claim_executor = ThreadPoolExecutor(1, thread_name_prefix="smpp-claim")
        requeued = await self._db(store.requeue_abandoned, sole)
        if requeued:
            logger.warning("took back %d parts a previous worker left in flight", requeued)
        failures = 0
        cfg = self.config.session
        while not self._stopping.is_set():
            await self._set_link("connecting", f"{cfg.host}:{cfg.port}")
            session = SMPPSession(cfg, self._on_submit_response, self._on_deliver)
            try:
                await session.open()
            except BindRefused as exc:
                await self._set_link("disconnected", str(exc))
                if exc.status in BIND_REFUSED:
                    # Wrong credentials do not fix themselves: say so loudly, retry slowly.
                    logger.error("SMPP %s: check SMPP_USER / SMPP_PASSWD", exc)
                    failures = len(self.config.reconnect_delays) - 1
                else:  # e.g. ESME_RALYBND: the SMSC still holds our old session
                    logger.warning("SMPP %s", exc)
            except BindUnanswered as exc:
                await self._set_link("disconnected", str(exc))
                logger.error("SMPP %s", exc)
            except LinkError as exc:
                await self._set_link("disconnected", str(exc))
                logger.warning("SMPP connection failed: %s", exc)
            else:
                failures = 0
                self._session = session
                self.refusals.new_session()
                await self._set_link("bound", f"{cfg.host}:{cfg.port} as {cfg.system_id}")
                logger.info(
                    "SMPP connected to %s:%d (bind %s)", cfg.host, cfg.port, session.bind_id
                )
                reason = await self._serve(session)
                self._session = None
                await self._set_link("disconnected", reason)
                # A stop we were asked for is routine (INFO); any other loss is news.
                stopping = self._stopping.is_set() and self._died is None
                logger.log(
                    logging.INFO if stopping else logging.WARNING, "SMPP disconnected: %s", reason
                )
                if self._stopping.is_set() or self._died is not None:
                    break
            delay = self.config.reconnect_delays[
                min(failures, len(self.config.reconnect_delays) - 1)
            ]
            failures += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        try:
            # A claim still running hands its parts back when it ends: wait for it.
            await self._db(close_old_connections, executor=self._claim_executor)
            await self._flush_all()
            if self._died is None:
                await self._set_link("stopped", "worker stopped")
            else:
                await self._set_link("failed", str(self._died))
        finally:
            # The threads' connections go back (to the pool, or closed) as they end.
            if self._claim_executor is not None:
                self._claim_executor.submit(connections.close_all)
                self._claim_executor.shutdown(wait=True)
            self._db_executor.submit(connections.close_all)
            self._db_executor.shutdown(wait=True)
        if self._died is not None:
            raise self._died from self._died.__cause__

    def _is_sole_worker(self) -> bool:
        """On SQLite there is only ever one worker: whatever is in flight is orphaned."""
        return connection.vendor == "sqlite"

    def _watch(self, task: asyncio.Task, name: str, session: SMPPSession) -> asyncio.Task:
        """Never silent: a long-running task that dies is logged with its traceback,
        the link is closed (what was in flight is handed back as on link loss) and
        ``run()`` raises ``WorkerTaskDied``. Cancellation (link lost, stop) is quiet."""

        def done(task: asyncio.Task) -> None:
            if task.cancelled() or task.exception() is None:
                return
            exc = task.exception()
            logger.error(
                "worker task %s died; stopping the worker",
                name,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            if self._died is None:
                self._died = WorkerTaskDied(f"worker task {name} died: {exc!r}")
                self._died.__cause__ = exc
            session.close(f"worker task {name} died")

        task.add_done_callback(done)
        return task

    async def _serve(self, session: SMPPSession) -> str:
        reader = self._watch(asyncio.ensure_future(session.run()), "session reader", session)
        helpers = [
            self._watch(asyncio.ensure_future(coro), name, session)
            for name, coro in (
                ("feed", self._feed(session)),
                ("flush loop", self._flush_loop()),
                ("maintenance", self._maintain()),
                ("query answers", self._answer_queries(session)),
            )
        ]
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([reader, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():  # a graceful stop: let the window drain, then unbind
            helpers[0].cancel()
            for _ in range(int(self.config.session.response_timeout * 10)):
                if session.in_flight == 0:
                    break
                await asyncio.sleep(0.1)
            await self._flush_all()
            await session.unbind()
            await asyncio.wait([reader], timeout=2)
        stopping.cancel()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        lost = session.take_in_flight()
        if lost:  # sent, never answered: the SMSC may have them
            self._pending.outcomes.extend(
                SubmitOutcome(
                    part_id=p.part_id,
                    message_id=p.message_id,
                    outcome=SubmitOutcome.UNKNOWN,
                    bind_id=session.bind_id,
                    detail="link lost before the SMSC answered",
                )
                for p in lost
            )
        await self._flush_all()
        if self._died is not None:
            return str(self._died)
        return reader.result() if reader.done() and not reader.cancelled() else "stopped"

    # --- submitting ------------------------------------------------------------------------

    async def _feed(self, session: SMPPSession) -> None:
        """Keep the window full of claimed parts, within the send rate.

        Parts are claimed ahead into ``_unsent`` while the window is being
        filled from it, so a claim's round trip never leaves the window empty.
        Whatever was claimed but never sent goes back to the queue as it was;
        so does a part that waited for half its lease (a slow, throttled send
        rate), before another worker may take it up.
        """
        layer = get_channel_layer()
        bucket = self.rate.bucket
        sent_meter = self.rate.sent
        unsent = self._unsent
        window = self.config.session.window
        keep = self.config.lease_seconds / 2
        backlog_limit = self.config.backlog_windows * window
        backlog_receipts = window
        claiming = None  # concurrent.futures.Future of the claim under way
        try:
            while True:
                # Two windows ahead (a crash marks the parts it claimed as possibly
                # duplicated: keep them few), a second's worth at most (the rate may be low).
                ahead = min(self.config.claim_batch, max(2 * window, 100))
                if bucket.rate is not None:
                    ahead = min(ahead, max(window, int(bucket.rate)))
                # Topped up continuously: under load a claim takes tens of ms, and at
                # thousands a second half the buffer was gone before it returned
                # (measured: the window ran dry 182 times in 20 s, 40 this way).
                if claiming is None and len(unsent) < ahead:
                    claiming = self._submit_db(
                        store.claim_parts,
                        self.worker_id,
                        ahead - len(unsent),
                        self.config.lease_seconds,
                        executor=self._claim_executor,
                    )
                if claiming is not None and (not unsent or claiming.done()):
                    # ``claiming`` is cleared only once its parts are taken in (or it
                    # failed): cancelled here as the link goes, the finally below hands
                    # them back. Dropped, they sat claimed until their lease ran out,
                    # then went out marked possibly duplicated though never sent.
                    try:
                        parts = await asyncio.shield(asyncio.wrap_future(claiming))
                    except Exception:
                        claiming = None
                        logger.exception("could not claim parts; trying again")
                        parts = []
                        await asyncio.sleep(self.config.poll_interval)
                    else:
                        claiming = None
                    deadline = time.monotonic() + keep
                    unsent.extend((deadline, part) for part in parts)
                    if not unsent:
                        await self._wait_for_work(layer)
                        continue
                await session.wait_for_window()
                while len(self._held) + len(self._pending.outcomes) >= backlog_limit or (
                    self._unanswered >= backlog_receipts and self._late_receipts > 0.5
                ):
                    # Results not yet written, or receipts come late (after their result
                    # was written alone) and as fast as we answer them: the SMSC has a
                    # queue of them. Let the store catch up before sending more.
                    await asyncio.sleep(0.002)
                allowed = bucket.take(min(session.window_free, len(unsent)))
                if allowed == 0:
                    await asyncio.sleep(max(0.001, bucket.wait_time()))
                    continue
                now = time.monotonic()
                stale = []
                unsendable = 0
                for _ in range(allowed):
                    deadline, part = unsent.popleft()
                    if deadline < now:
                        stale.append(part)
                        continue
                    try:
                        session.submit(part, **submit_fields(part))
                    except LinkError:
                        unsent.appendleft((deadline, part))
                        return
                    except Exception as exc:  # this part only: the loop goes on
                        self._fail_unsendable(part, exc)
                        unsendable += 1
                        continue
                sent_meter.add(allowed - len(stale) - unsendable)  # once a batch
                if stale or unsendable:
                    bucket.give_back(len(stale) + unsendable)
                if stale:
                    self._release(stale)
                await session.drain()
        finally:
            self._release([part for _, part in unsent])
            unsent.clear()
            if claiming is not None:  # a claim not taken in: release what it brings
                loop = asyncio.get_running_loop()

                def done(future) -> None:
                    if not future.cancelled() and future.exception() is None:
                        loop.call_soon_threadsafe(self._release, future.result())

                claiming.add_done_callback(done)

    @property
    def _unanswered(self) -> int:
        """deliver_sm received and not yet answered."""
        return self._answering + len(self._pending.receipts) + len(self._pending.fragments)

    def _fail_unsendable(self, part: ClaimedPart, exc: Exception) -> None:
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
        self._pending.outcomes.append(
            SubmitOutcome(
                part_id=part.part_id,
                message_id=part.message_id,
                outcome=SubmitOutcome.FAILED,
                # What an SMSC answers such a field with (FieldError), so the API's
                # answer names the field's fault; None for anything else.
                command_status=getattr(exc, "status", None),
                bind_id=self._session.bind_id if self._session else "",
                detail=f"cannot be sent: {exc}",
            )
        )
        self._flush_wanted.set()

    def _release(self, parts: list[ClaimedPart]) -> None:
        """Claimed parts that never left go back to the queue (not as duplicates)."""
        if parts:
            self._pending.outcomes.extend(
                SubmitOutcome(
                    part_id=p.part_id, message_id=p.message_id, outcome=SubmitOutcome.UNSENT
                )
                for p in parts
            )
            self._flush_wanted.set()

    async def _wait_for_work(self, layer) -> None:
        """Sleep until the API rings the bell or the poll interval passes."""
        try:
            if layer is not None:
                await asyncio.wait_for(layer.receive(WORKER_CHANNEL), self.config.poll_interval)
            else:
                await asyncio.sleep(self.config.poll_interval)
        except TimeoutError:
            pass
        except Exception:  # a broken channel layer: the queue is polled all the same
            logger.warning("worker bell not heard; polling", exc_info=True)
            await asyncio.sleep(self.config.poll_interval)

    def _on_submit_response(
        self, part: ClaimedPart, status: int | None, message_id: str, sequence: int
    ) -> None:
        bind_id = self._session.bind_id if self._session else ""
        if status == 0:
            if self.refusals.refusing_since is not None:
                self.refusals.accepted()
        elif status is None or reaction_for(status).retryable:
            self.refusals.refused(status)  # counted and timed (see _watch_refusals)
        if status is None:
            logger.warning(
                "message %d part %d: no submit_sm_resp in time; sending it again",
                part.message_id,
                part.index,
                extra={"message_id": part.message_id, "part": part.index},
            )
            outcome = SubmitOutcome(
                part_id=part.part_id,
                message_id=part.message_id,
                outcome=SubmitOutcome.UNKNOWN,
                bind_id=bind_id,
                sequence=sequence,
                retry_at=timezone.now(),
                detail="no submit_sm_resp in time",
            )
        elif status == 0 and (problem := submit_id_problem(message_id.strip())):
            # Accepted, but with an id no receipt can match (none) or that the store
            # would have to cut: a protocol error for this part, never a part waiting
            # for ever or sharing its id with another.
            logger.error(
                "message %d part %d: %s; the part is failed",
                part.message_id,
                part.index,
                problem,
                extra={"message_id": part.message_id, "part": part.index},
            )
            outcome = SubmitOutcome(
                part_id=part.part_id,
                message_id=part.message_id,
                outcome=SubmitOutcome.FAILED,
                command_status=0,
                bind_id=bind_id,
                sequence=sequence,
                detail=problem,
            )
        elif status == 0:
            outcome = SubmitOutcome(
                part_id=part.part_id,
                message_id=part.message_id,
                outcome=SubmitOutcome.SUBMITTED,
                command_status=0,
                smsc_id=message_id.strip(),  # kept as the SMSC gave it; matched by key
                bind_id=bind_id,
                sequence=sequence,
            )
            if (
                part.register == "final"
                and not part.waited
                and self.config.receipt_wait > 0
                and len(self._held) < self.config.receipt_wait_max
                and not self._receipts_seen.seen((key := match_key(outcome.smsc_id),))
            ):
                self._hold(key, outcome)
                return
        else:
            reaction = reaction_for(status)
            if reaction == Reaction.FAIL:
                logger.info(
                    "message %d part %d refused by the SMSC: %s",
                    part.message_id,
                    part.index,
                    status_name(status),
                    extra={
                        "message_id": part.message_id,
                        "part": part.index,
                        "command_status": status,
                    },
                )
                outcome = SubmitOutcome(
                    part_id=part.part_id,
                    message_id=part.message_id,
                    outcome=SubmitOutcome.FAILED,
                    command_status=status,
                    bind_id=bind_id,
                    sequence=sequence,
                    detail=status_name(status),
                )
            else:
                if reaction == Reaction.RETRY_THROTTLED:
                    self.rate.throttled()
                elif reaction == Reaction.REBIND and self._session is not None:
                    self._session.close("the SMSC says we are not bound: binding again")
                delay = RETRY_DELAYS.get(reaction, 5.0) * min(part.attempts, 6)
                outcome = SubmitOutcome(
                    part_id=part.part_id,
                    message_id=part.message_id,
                    outcome=SubmitOutcome.RETRY,
                    command_status=status,
                    bind_id=bind_id,
                    sequence=sequence,
                    retry_at=timezone.now() + timedelta(seconds=delay),
                    detail=status_name(status),
                )
        self._pending.outcomes.append(outcome)
        self._flush_wanted.set()

    # --- results waiting for their receipt ------------------------------------------------
    #
    # A fast SMSC sends the receipt a moment after the response. Written apart,
    # the part and its message are locked and updated twice; written in one
    # batch, once. So an accepted submit whose receipt will come (and that no
    # request waits for) is held for ``receipt_wait`` seconds: its receipt
    # takes it along, or the timer writes it alone. A crash meanwhile leaves
    # the part in flight, to be sent again marked possibly duplicated, as a
    # crash before any write does.

    def _hold(self, key: str, outcome: SubmitOutcome) -> None:
        """Hold ``outcome`` under its SMSC id's match key (smpp.smsc_ids)."""
        loop = asyncio.get_running_loop()
        earlier = self._held.pop(key, None)
        if earlier is not None:  # an id that one key stands for twice: write, never drop, it
            self._pending.outcomes.append(earlier[1])
        self._held[key] = (loop.time() + self.config.receipt_wait, outcome)
        if self._held_timer is None:
            self._held_timer = loop.call_later(self.config.receipt_wait, self._release_held)

    def _release_held(self, everything: bool = False) -> None:
        """Hand the results whose wait is over (or all of them) to the next write."""
        if self._held_timer is not None:
            self._held_timer.cancel()  # one timer at a time (this may be it)
        self._held_timer = None
        now = asyncio.get_running_loop().time()
        released = []
        for smsc_id, (due, outcome) in self._held.items():
            if due > now and not everything:
                # In holding order, so in due order: the rest are younger.
                self._held_timer = asyncio.get_running_loop().call_at(due, self._release_held)
                break
            released.append(smsc_id)
            self._pending.outcomes.append(outcome)
        self._released.add(released)
        for smsc_id in released:
            del self._held[smsc_id]
        if released:
            self._flush_wanted.set()

    def _take_held(self, receipt: ReceiptIn) -> bool:
        """A receipt came: its submit's result goes in the same write."""
        for key in receipt.match_keys:  # its own key first, as the store matches
            entry = self._held.pop(key, None)
            if entry is not None:
                self._pending.outcomes.append(entry[1])
                return True
        return False

    async def _answer_queries(self, session: SMPPSession) -> None:
        """Serve /v1/query's questions to the SMSC (query_sm) while bound."""
        layer = get_channel_layer()
        if layer is None:
            return
        while True:
            try:
                request = await layer.receive(QUERY_CHANNEL)
            except Exception:  # a broken channel layer (Redis down): not a dead worker
                logger.warning("could not read query requests; trying again", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            reply: dict[str, Any] = {"type": "query.result"}
            try:
                pdu = await session.query(
                    request["message_id"],
                    request.get("src", ""),
                    request.get("src_ton", 0),
                    request.get("src_npi", 0),
                )
            except (TimeoutError, LinkError) as exc:
                reply["error"] = f"no answer from the SMSC: {exc or type(exc).__name__}"
            except Exception as exc:  # one question (an id query_sm cannot carry): its own
                logger.warning("query_sm not sent: %s", exc)
                reply["error"] = f"cannot ask the SMSC: {exc}"
            else:
                reply.update(
                    command_status=pdu.status,
                    message_state=pdu.message_state,
                    final_date=as_text(pdu.final_date),
                    error_code=pdu.error_code,
                )
            try:
                await layer.send(request.get("reply_channel", ""), reply)
            except Exception:  # the asker has gone; nothing is lost
                logger.debug("query answer not delivered", exc_info=True)

    # --- receiving ---------------------------------------------------------------------------

    def _on_deliver(self, pdu: Any, sequence: int) -> None:
        try:
            item = read_deliver(pdu)
        except Exception as exc:
            # The same bytes would fail the same way: refused for good, not "retry".
            logger.error(
                "deliver_sm %d refused with ESME_RX_P_APPN: %s (%r)",
                sequence,
                exc,
                pdu if isinstance(pdu, bytes) else {n: getattr(pdu, n, None) for n in _SEEN},
                exc_info=None if isinstance(exc, ValueError) else exc,
            )
            if self._session is not None:
                self._session.respond_deliver(sequence, RECEIVER_PERMANENT)
            return
        if isinstance(item, ReceiptIn):
            late = False
            if not self._take_held(item):
                late = self._released.seen(item.match_keys)
                if not late:  # it overtook its response: that result must not wait for it
                    self._receipts_seen.add(item.match_keys)
            # Share of receipts that came after their result was written alone, lately.
            self._late_receipts += (late - self._late_receipts) / 64
            self._pending.receipts.append((item, sequence, self._session))
        else:
            self._pending.fragments.append((item, sequence, self._session))
        self._flush_wanted.set()

    # --- writing to the store ------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wanted.wait()
            await asyncio.sleep(self.config.flush_interval)  # let a batch gather
            if self._session is not None:
                # ... with every deliver_sm already received: the SMSC sends no more
                # until these are answered, so a write that leaves some behind halves
                # the receipts per write (measured: 2,400 -> 1,800 msg/s end to end).
                await self._session.delivers_read()
            self._flush_wanted.clear()
            await self._flush()

    async def _flush_all(self) -> None:
        self._release_held(everything=True)
        while self._pending:
            await self._flush()
        if self._publishing is not None:
            await self._publishing

    async def _flush(self) -> None:
        """Write a batch of what is pending, then answer the SMSC and ring the bells.

        Submit results and receipts go in one transaction; should it fail (a
        receipt the database refuses, say), they are tried apart, so that one
        bad deliver_sm never holds up the results of the submits.
        """
        pending = self._pending.take(self.config.flush_batch)
        self._answering = len(pending.receipts) + len(pending.fragments)
        if self._pending:
            self._flush_wanted.set()  # more than one batch's worth: go on at once
        if not pending:
            return
        notes = Notifications()
        receipts = [item for item, _, _ in pending.receipts]
        max_attempts = self.config.max_attempts
        receipt_statuses = [0] * len(receipts)
        try:
            notes.merge(
                await self._db(store.record_results, pending.outcomes, receipts, max_attempts)
            )
        except Exception:
            logger.warning("could not write a batch of results; trying its parts apart")
            if pending.outcomes:
                await self._record_outcomes_apart(pending.outcomes, notes)
            receipt_statuses = await self._store_each(receipts, _store_receipts, notes)
        self._answer(pending.receipts, receipt_statuses)
        self._answering = len(pending.fragments)
        if pending.fragments:
            statuses = await self._store_each(
                [f for f, _, _ in pending.fragments], self._store_fragments, notes
            )
            self._answer(pending.fragments, statuses)
        self._answering = 0
        self._publish(notes)

    async def _record_outcomes_apart(self, outcomes: list[SubmitOutcome], notes) -> None:
        """Submit results whose batch failed: alone, then one by one when the data is
        at fault. One the database refuses becomes a failure of its part (recorded
        with the reason); if even that cannot be written it is dropped, logged, and
        its part comes back when its lease runs out. A database that is down keeps
        them all, to be tried again in a second."""
        max_attempts = self.config.max_attempts
        if len(outcomes) > 1:
            try:
                notes.merge(await self._db(store.record_results, outcomes, (), max_attempts))
                return
            except PERMANENT_ERRORS as exc:
                logger.warning("a submit result cannot be written (%s); one by one now", exc)
            except Exception:
                logger.exception("could not record %d submit results; will retry", len(outcomes))
                await self._requeue_outcomes(outcomes)
                return
        for outcome in outcomes:
            try:
                notes.merge(await self._db(store.record_results, [outcome], (), max_attempts))
                continue
            except PERMANENT_ERRORS as exc:
                reason = exc
            except Exception:
                logger.exception("could not record a submit result; will retry")
                await self._requeue_outcomes([outcome])
                continue
            failed = SubmitOutcome(
                part_id=outcome.part_id,
                message_id=outcome.message_id,
                outcome=SubmitOutcome.FAILED,
                command_status=outcome.command_status,
                bind_id=outcome.bind_id,
                detail=f"the SMSC's answer cannot be stored: {reason}",
            )
            logger.error(
                "message %s part id %d: the SMSC's answer %r cannot be stored (%s); the part "
                "is failed",
                outcome.message_id,
                outcome.part_id,
                outcome,
                reason,
                extra={"message_id": outcome.message_id},
            )
            try:
                notes.merge(await self._db(store.record_results, [failed], (), max_attempts))
            except Exception:
                logger.exception(
                    "message %s part id %d: not even its failure can be stored; it goes back "
                    "to the queue when its lease runs out",
                    outcome.message_id,
                    outcome.part_id,
                )

    async def _requeue_outcomes(self, outcomes: list[SubmitOutcome]) -> None:
        """Results the database could not take now: first in line for the next write,
        in a second."""
        self._pending.outcomes[:0] = outcomes
        await asyncio.sleep(1)
        self._flush_wanted.set()

    async def _store_each(self, items: list, write, notes) -> list[int]:
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
            notes.merge(await self._db(write, items))
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
            statuses += await self._store_each([item], write, notes)
        return statuses

    def _publish(self, notes: Notifications) -> None:
        """Ring the bells in the background, in order: the next write need not wait."""
        if notes.last_event_id is None and not notes.waiters:
            return
        previous = self._publishing

        async def ring() -> None:
            if previous is not None:
                await previous
            await publish(notes)

        self._publishing = asyncio.ensure_future(ring())

    def _answer(self, delivered: list[tuple[Any, int, Any]], statuses: list[int]) -> None:
        """deliver_sm_resp on the session each deliver_sm came in on; after a
        reconnection the old sequence numbers mean nothing: the SMSC resends."""
        for (_, sequence, session), status in zip(delivered, statuses, strict=True):
            if session is not None and session is self._session:
                session.respond_deliver(sequence, status)

    def _store_fragments(self, fragments: list[FragmentIn]) -> Notifications:
        return store.store_fragments(fragments, self.config.default_alphabet)

    async def _maintain(self) -> None:
        """Expiry, abandoned leases, stale reassemblies and the link heartbeat."""
        loop = asyncio.get_running_loop()
        expired_at = loop.time()
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            now = loop.time()
            self.rate.tick()
            try:
                await self._watch_refusals()
                notes = Notifications()
                if now - expired_at >= self.config.expire_interval:
                    # Claims never send an overdue part: marking it expired can wait a
                    # little (it reads every message with a validity).
                    expired_at = now
                    notes.merge(await self._db(store.expire_overdue))
                notes.merge(
                    await self._db(
                        store.assemble_stale_fragments,
                        self.config.reassembly_timeout,
                        self.config.default_alphabet,
                    )
                )
                await self._db(store.requeue_abandoned)
                await self._db(_heartbeat, self.worker_id, self.link_health().as_dict())
                await publish(notes)
            except Exception:
                logger.exception("maintenance failed; trying again")

    # --- link health ---------------------------------------------------------------------------

    def link_health(self) -> LinkHealth:
        """How the SMSC treats our submits: for /metrics and /v1/status, via the heartbeat."""
        refusals = self.refusals
        return LinkHealth(
            throttled=refusals.total(ESME_RTHROTTLED),
            queue_full=refusals.total(ESME_RMSGQFUL),
            refused=sum(refusals.totals.values()) - refusals.total(ESME_RTHROTTLED, ESME_RMSGQFUL),
            rate=self.rate.rate or 0.0,
            sent=self.rate.sent.rate(),
            refusing_for=refusals.refusing_for(),
            bells_dropped=BELLS.dropped,
        )

    async def _watch_refusals(self) -> None:
        """A summary of the SMSC's refusals in the log (at most once an interval), and a
        session that refuses every submit for ``stall_rebind_after`` reported and rebound."""
        summary = self.refusals.take_summary(self.config.refusal_log_interval)
        if summary is not None:
            logger.warning("SMPP %s", self._describe_refusals(summary))
        if self.link_state != BOUND or not self.refusals.stalled():
            return
        last = self.refusals.last_status
        why = (
            f"every submit refused for {self.refusals.refusing_for():.0f} s (the last: "
            f"{'no answer' if last is None else status_name(last)})"
        )
        logger.error(
            "SMPP session stalled: %s; binding again (SMPP_STALL_REBIND_AFTER=%g s)",
            why,
            self.config.stall_rebind_after,
        )
        await self._set_link(STALLED, why)
        if self._session is not None:
            self._session.close(f"stalled: {why}; binding again")

    def _describe_refusals(self, summary: RefusalSummary) -> str:
        """``submits refused in the last 10.0 s: 67 x ESME_RTHROTTLED; send rate now ...``"""
        counts = ", ".join(
            f"{count} x {'no answer' if status is None else status_name(status)}"
            for status, count in sorted(summary.counts.items(), key=lambda item: -item[1])
        )
        limit = self.rate.rate
        return (
            f"submits refused in the last {summary.seconds:.1f} s: {counts}; send rate now "
            f"{'unlimited' if limit is None else f'{limit:.1f}/s'} "
            f"(sent {self.rate.sent.rate():.1f}/s over the last second)"
        )

    @property
    def smsc_address(self) -> str:
        """``host:port`` this worker binds to (what /v1/status and /metrics label it with).

        The session's own address, not ``SMPP_ADDR``: ``serve`` points the worker
        at its embedded simulator (``SIMULATOR_PORT``) whatever that setting says.
        """
        cfg = self.config.session
        return f"{cfg.host}:{cfg.port}"

    async def _set_link(self, state: str, detail: str) -> None:
        self.link_state = state
        try:
            await self._db(
                _save_link_status,
                self.worker_id,
                state,
                detail,
                self.link_health().as_dict(),
                self.smsc_address,
            )
        except Exception:
            logger.warning("could not record link state %s", state, exc_info=True)
        layer = get_channel_layer()
        if layer is not None:
            try:
                await layer.group_send(
                    "link",
                    {
                        "type": "link.state",
                        "worker_id": self.worker_id,
                        "state": state,
                        "detail": detail,
                    },
                )
            except Exception:
                logger.debug("link bell not rung", exc_info=True)


class _RecentIds:
    """Ids seen in the last ``keep`` to 2 x ``keep`` seconds (two generations of a set)."""

    def __init__(self, keep: float):
        self.keep = keep
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._since = time.monotonic()

    def _rotate(self) -> None:
        now = time.monotonic()
        if now - self._since > self.keep:
            self._previous, self._current, self._since = self._current, set(), now

    def add(self, ids) -> None:
        self._rotate()
        self._current.update(ids)

    def seen(self, ids) -> bool:
        self._rotate()
        return any(i in self._current or i in self._previous for i in ids)


# Fields of a deliver_sm worth logging when it cannot be read.
_SEEN = ("source_addr", "destination_addr", "esm_class", "data_coding", "short_message")


def _store_receipts(receipts: list[ReceiptIn]) -> Notifications:
    return store.record_results((), receipts)


def _save_link_status(worker_id: str, state: str, detail: str, health: dict, smsc: str) -> None:
    now = timezone.now()
    LinkStatus.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "state": state,
            "detail": detail[:200],
            "smsc": smsc[:200],
            "changed_at": now,
            "heartbeat_at": now,
            "health": health,
        },
    )


def _heartbeat(worker_id: str, health: dict) -> None:
    # The health figures ride on the update the heartbeat makes anyway: no round trip more.
    LinkStatus.objects.filter(worker_id=worker_id).update(
        heartbeat_at=timezone.now(), health=health
    )
