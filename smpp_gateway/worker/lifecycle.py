"""``SMPPWorker``: the parts of the worker put together, and their life cycle.

It owns one bind at a time (``Link``) and, while bound, runs the feeder (claims
and submits), the result writer (batches to the store), the upkeep loop and the
query answerer; the session calls back into ``SubmitAnswers`` and
``IncomingDeliveries``. When the link goes, what was in flight is written as
unknown and what was claimed but unsent goes back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from django.db import close_old_connections, connection

from messaging import store
from messaging.health import LinkHealth
from messaging.orm_thread import DatabaseThread
from messaging.store import SubmitOutcome
from smpp.flow import AdaptiveRate, SubmitRefusals
from smpp.session import SMPPSession
from smpp_gateway.worker.answers import SubmitAnswers
from smpp_gateway.worker.config import WorkerConfig
from smpp_gateway.worker.feeder import Feeder
from smpp_gateway.worker.intake import IncomingDeliveries
from smpp_gateway.worker.link import Link
from smpp_gateway.worker.receipt_wait import ReceiptWait
from smpp_gateway.worker.results import Pending, ResultWriter
from smpp_gateway.worker.upkeep import answer_queries, maintain

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker


class WorkerTaskDied(RuntimeError):
    """A long-running task of the worker ended with an error: ``run()`` raises this
    (after handing back what it held) so that the process exits non-zero."""


class SMPPWorker:
    """Moves parts from the store to the SMSC and answers back into the store."""

    def __init__(
        self, config: WorkerConfig, worker_id: str | None = None, requeue_on_start: bool = True
    ) -> None:
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # False when a fleet starts it: the fleet took back what was left in flight
        # once, before any of its workers ran (on SQLite, "all in flight" would take
        # back what the fleet's other workers are sending).
        self.requeue_on_start = requeue_on_start
        self.rate = AdaptiveRate(config.max_rate)
        self.refusals = SubmitRefusals(config.stall_rebind_after)
        # Database work runs in threads of the worker's own, each keeping its connection:
        # one on SQLite (one writer), two on PostgreSQL, so that claims never queue behind
        # a batch of results (a claim skips rows another transaction holds).
        self.db = DatabaseThread("smpp-db")
        self.claims = self.db if self._sole_worker() else DatabaseThread("smpp-claim")
        self.link = Link(config, self.worker_id, self.db, self.rate, self.refusals)
        pending = Pending()
        self.receipt_wait = ReceiptWait(pending, config.receipt_wait, config.receipt_wait_max)
        self.results = ResultWriter(config, self.db, self.link, pending, self.receipt_wait)
        self.answers = SubmitAnswers(
            self.link, pending, self.receipt_wait, self.rate, self.refusals
        )
        self.intake = IncomingDeliveries(
            self.link, pending, self.receipt_wait, config.smsc_id_style
        )
        self.feeder = Feeder(
            config, self.worker_id, self.claims, self.rate, pending, self.receipt_wait, self.results
        )
        self._stopping = asyncio.Event()
        self._died: WorkerTaskDied | None = None  # set when a long-running task died

    @property
    def link_state(self) -> str:
        return self.link.state

    @property
    def smsc_address(self) -> str:
        """``host:port`` this worker binds to (see ``Link.smsc_address``)."""
        return self.link.smsc_address

    def link_health(self) -> LinkHealth:
        """How the SMSC treats our submits (see ``Link.health``)."""
        return self.link.health()

    def stop(self) -> None:
        """Stop claiming, drain the window, unbind (see ``run``)."""
        self._stopping.set()

    async def run(self) -> None:
        """Keep a bind up until ``stop()``; reconnect with capped backoff."""
        await self.db.run(close_old_connections)
        if self.requeue_on_start:
            requeued = await self.db.run(store.requeue_abandoned, self._sole_worker())
            if requeued:
                logger.warning("took back %d parts a previous worker left in flight", requeued)
        while not self._stopping.is_set():
            session = await self.link.bind(self.answers.on_response, self.intake.on_deliver)
            if session is not None:
                reason = await self._serve(session)
                await self.link.unbound(
                    reason, routine=self._stopping.is_set() and self._died is None
                )
                if self._stopping.is_set() or self._died is not None:
                    break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.link.backoff())
        await self._shut_down()
        if self._died is not None:
            raise self._died from self._died.__cause__

    async def _shut_down(self) -> None:
        try:
            # A claim still running hands its parts back when it ends: wait for it.
            await self.claims.run(close_old_connections)
            await self.results.flush_all()
            if self._died is None:
                await self.link.set_state("stopped", "worker stopped")
            else:
                await self.link.set_state("failed", str(self._died))
        finally:
            self.close_database_threads()

    def close_database_threads(self) -> None:
        """Their connections go back (to the pool, or closed) as they end."""
        if self.claims is not self.db:
            self.claims.close()
        self.db.close()

    @staticmethod
    def _sole_worker() -> bool:
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
        """Run the parts over ``session`` until the link goes or we stop; the reason."""
        reader = self._watch(asyncio.ensure_future(session.run()), "session reader", session)
        jobs = [
            ("flush loop", self.results.flush_loop()),
            ("maintenance", maintain(self.config, self.db, self.link)),
        ]
        # A receiver bind only takes deliveries: no submits, no query_sm.
        sends = self.config.session.bind_kind != "receiver"
        if sends:
            jobs += [
                ("feed", self.feeder.run(session)),
                ("query answers", self._answer_queries(session)),
            ]
        helpers = {
            name: self._watch(asyncio.ensure_future(coro), name, session) for name, coro in jobs
        }
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([reader, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():  # a graceful stop: let the window drain, then unbind
            if sends:
                helpers["feed"].cancel()
            await self._drain(session)
            await asyncio.wait([reader], timeout=2)
        stopping.cancel()
        for task in helpers.values():
            task.cancel()
        await asyncio.gather(*helpers.values(), return_exceptions=True)
        self._lost_in_flight(session)
        await self.results.flush_all()
        if self._died is not None:
            return str(self._died)
        return reader.result() if reader.done() and not reader.cancelled() else "stopped"

    async def _answer_queries(self, session: SMPPSession) -> None:
        """/v1/query's questions, while bound (a method: tests make it die)."""
        await answer_queries(session, self.config.connector)

    async def _drain(self, session: SMPPSession) -> None:
        """The answers to what is in flight (up to the response timeout), written; unbind."""
        for _ in range(int(self.config.session.response_timeout * 10)):
            if session.in_flight == 0:
                break
            await asyncio.sleep(0.1)
        await self.results.flush_all()
        await session.unbind()

    def _lost_in_flight(self, session: SMPPSession) -> None:
        """Sent, never answered: the SMSC may have them (written as unknown)."""
        lost = session.take_in_flight()
        if lost:
            self.results.pending.outcomes.extend(
                SubmitOutcome(
                    part_id=p.part_id,
                    message_id=p.message_id,
                    outcome=SubmitOutcome.UNKNOWN,
                    bind_id=session.bind_id,
                    detail="link lost before the SMSC answered",
                )
                for p in lost
            )
