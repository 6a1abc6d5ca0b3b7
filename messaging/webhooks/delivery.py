"""Webhooks: receipts, final states and incoming messages POSTed to the clients' URLs.

This module is the sender's loop; each step has a module of its own in
``messaging.webhooks``: ``planning``, ``attempts`` (claiming and recording),
``posting``, and the address policy in ``targets`` and ``transport``.

The sender is a service of its own (``WebhookSender``), never a step of the
SMPP worker: a slow or dead receiver only delays its own deliveries. It runs in
``manage.py serve`` or as ``manage.py webhook_sender`` (any number of them on
PostgreSQL). Everything it does goes through the store:

1. *Plan*: read the event log after the shared ``WebhookCursor`` (row-locked,
   so no event is planned twice) and create one ``WebhookDelivery`` per event
   and receiver, in the same transaction that moves the cursor on.
2. *Claim*: take due pending deliveries (``SKIP LOCKED``), leasing each one by
   pushing its ``next_attempt_at`` past the longest a POST can take, so a
   sender that dies mid-POST leaves it to be tried again (at least once).
3. *Post* concurrently (``WEBHOOK_CONCURRENCY`` at a time), signed with
   HMAC-SHA256 (``posting.sign``), only to addresses the policy allows (no
   loopback, private... unless ``WEBHOOK_ALLOW_PRIVATE``: ``targets``, enforced
   on the address connected to by ``transport``), and *record* every
   attempt; a failure is tried again after ``WEBHOOK_BACKOFF`` until
   ``WEBHOOK_MAX_ATTEMPTS`` (a refused literal address fails at once).

Who gets what (see docs/webhooks.md): a message's receipts and final status
events go to its ``callback_url``, else its API key's ``default_callback_url``;
incoming messages go to the default URL of every key that receives them and to
``WEBHOOK_INCOMING_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime

import httpx
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from messaging.models import WebhookDelivery
from messaging.notify import EVENTS_GROUP, Doorbell
from messaging.orm_thread import DatabaseThread
from messaging.url_secrets import loggable_url
from messaging.webhooks.attempts import AttemptResult, Outgoing, claim_due, record_results
from messaging.webhooks.planning import Planner
from messaging.webhooks.posting import post
from messaging.webhooks.targets import InvalidCallbackURL, clean_callback_url, private_allowed
from messaging.webhooks.transport import GuardedTransport

logger = logging.getLogger(__name__)

LEASE_MARGIN = 30.0  # seconds a claim outlives the POST timeout


def _store_outages() -> tuple[type[Exception], ...]:
    """What a store outage raises (database down, locked, pool exhausted): Django's
    errors, and the drivers' own from the raw cursors of ``messaging.store.backends``."""
    outages: list[type[Exception]] = [
        OperationalError,
        InterfaceError,
        sqlite3.OperationalError,
        sqlite3.InterfaceError,
    ]
    with contextlib.suppress(ImportError):  # PostgreSQL only
        import psycopg

        outages += [psycopg.OperationalError, psycopg.InterfaceError]
    return tuple(outages)


# The sender waits these out and tries again; anything else out of a round is a
# bug: logged with its traceback, and raised from run().
STORE_OUTAGES = _store_outages()


@dataclass(frozen=True)
class SenderConfig:
    """The knobs of one sender; ``from_settings`` reads the WEBHOOK_* settings."""

    concurrency: int = 20
    timeout: float = 10.0
    max_attempts: int = 8
    backoff: tuple[float, ...] = (10, 30, 120, 600, 3600, 10800, 21600)
    poll_interval: float = 1.0
    plan_batch: int = 500
    # After the events bell, this long for more: events come in many small
    # transactions (a bell each), and a round per bell (a write transaction on
    # SQLite) was a tenth of the embedded server's CPU under /v1/send.
    gather: float = 0.05
    # WEBHOOK_ALLOW_PRIVATE: POSTs may go to loopback, private... addresses (tests, development).
    allow_private: bool = False

    @classmethod
    def from_settings(cls) -> SenderConfig:
        return cls(
            concurrency=max(1, settings.WEBHOOK_CONCURRENCY),
            timeout=settings.WEBHOOK_TIMEOUT,
            max_attempts=max(1, settings.WEBHOOK_MAX_ATTEMPTS),
            backoff=tuple(settings.WEBHOOK_BACKOFF),
            poll_interval=settings.WEBHOOK_POLL_INTERVAL,
            allow_private=private_allowed(),
        )


class WebhookSender:
    """Plans, posts and records webhooks until ``stop()`` (see the module doc).

    Wakes when the "events" bell rings, when a POST ends, when a retry falls
    due, and every ``poll_interval`` anyway (a bell can be lost).
    """

    def __init__(self, config: SenderConfig | None = None) -> None:
        self.config = config or SenderConfig.from_settings()
        self.planner = Planner()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, Outgoing] = {}  # delivery id -> what is being posted
        self._tasks: set[asyncio.Task] = set()
        self._results: list[tuple[Outgoing, AttemptResult]] = []
        self._next_retry: datetime | None = None
        self._db_thread: DatabaseThread | None = None
        self._task_failure: BaseException | None = None  # what killed a POST's task

    def stop(self) -> None:
        """Finish the POSTs in flight, record them and return from ``run``."""
        self._stopping.set()
        self._wake.set()

    async def _db(self, func, *args):
        """Run ORM code on the sender's own database thread (made by ``run``)."""
        return await self._db_thread.run(func, *args)

    async def run(self) -> None:
        """Serve until ``stop()``. A store outage is waited out (logged once, then a
        line a round); anything else unexpected, out of a round or a POST's task, is
        logged with its traceback and raised from here, so that the process exits
        and its supervisor restarts it, rather than the sender dying silently."""
        self._db_thread = DatabaseThread("webhook-db")
        bell = Doorbell(get_channel_layer(), (EVENTS_GROUP,))
        await bell.start()
        limits = httpx.Limits(max_connections=self.config.concurrency)
        transport = GuardedTransport(limits, allow_private=self.config.allow_private)
        try:
            async with httpx.AsyncClient(
                transport=transport, timeout=self.config.timeout, follow_redirects=False
            ) as client:
                try:
                    await self._serve(client, bell)
                except BaseException:
                    # Leave nothing running: an unrecorded POST is leased, and its
                    # delivery is tried again once the lease runs out.
                    running = list(self._tasks)
                    for task in running:
                        task.cancel()
                    if running:
                        await asyncio.wait(running, timeout=1)
                    raise
        finally:
            await bell.stop()
            await self._db_thread.aclose()

    def _check_incoming_url(self) -> None:
        """Say at start when ``WEBHOOK_INCOMING_URL`` breaks the rule for callback URLs
        (its POSTs would all be refused, or its API key is dropped)."""
        url = settings.WEBHOOK_INCOMING_URL
        if not url:
            return
        try:
            cleaned = clean_callback_url(url, allow_private=self.config.allow_private)
        except InvalidCallbackURL as exc:
            logger.error(
                "WEBHOOK_INCOMING_URL %s: %s; incoming messages posted there will fail",
                loggable_url(url),
                exc,
            )
            return
        if cleaned != url:
            logger.warning(
                "WEBHOOK_INCOMING_URL carries an api_key: it is posted to as %s (keys are "
                "never stored or sent on); check the POSTs' signature instead",
                cleaned,
            )

    async def _serve(self, client: httpx.AsyncClient, bell: Doorbell) -> None:
        self._check_incoming_url()
        await self._db(close_old_connections)
        failing = False
        while not self._stopping.is_set():
            try:
                busy = await self._round(client)
            except STORE_OUTAGES as exc:
                # The whole story once, then one line a round until it recovers.
                if failing:
                    logger.warning("webhook sender: store still unavailable: %s", exc)
                else:
                    logger.exception("webhook sender: store unavailable; trying again")
                failing, busy = True, False
            except Exception:
                logger.exception("webhook sender: unexpected error; stopping")
                raise
            else:
                if failing:
                    logger.info("webhook sender: store available again")
                failing = False
            self._raise_task_failure()
            if not busy:
                await self._sleep(bell)
                self._raise_task_failure()
        if self._tasks:  # let the POSTs in flight end (each is bounded by the timeout)
            await asyncio.wait(self._tasks, timeout=self.config.timeout + 1)
        self._raise_task_failure()
        with contextlib.suppress(Exception):
            await self._record()

    def _raise_task_failure(self) -> None:
        """Raise what killed a POST's task, if one died (it was logged when it did)."""
        if self._task_failure is not None:
            raise self._task_failure

    async def _round(self, client: httpx.AsyncClient) -> bool:
        """Record, plan, claim and start POSTs once; True when more work is waiting."""
        await self._record()
        read = await self._db(self.planner.plan, self.config.plan_batch)
        free = self.config.concurrency - len(self._in_flight)
        claimed: list[Outgoing] = []
        if free > 0:
            claimed = await self._db(claim_due, free, self.config.timeout + LEASE_MARGIN)
            for outgoing in claimed:
                self._start(client, outgoing)
        return read >= self.config.plan_batch or (free > 0 and len(claimed) == free)

    def _start(self, client: httpx.AsyncClient, outgoing: Outgoing) -> None:
        async def deliver():
            result = await post(client, outgoing, self.config.timeout)
            self._results.append((outgoing, result))
            self._wake.set()

        self._in_flight[outgoing.delivery_id] = outgoing
        task = asyncio.create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        """A POST's task ended: ``post`` never raises, so an exception here is a bug.
        Logged now, with its traceback, and raised by the loop (``run``)."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        logger.error("webhook sender: a delivery task died", exc_info=error)
        if self._task_failure is None:
            self._task_failure = error
        self._wake.set()

    async def _record(self) -> None:
        """Write the attempts that ended, then free their slots."""
        if not self._results:
            return
        results, self._results = self._results, []
        try:
            deliveries = await self._db(
                record_results,
                [result for _, result in results],
                self.config.max_attempts,
                self.config.backoff,
            )
        except Exception:
            self._results[:0] = results  # keep them (and their slots) for the next round
            raise
        for outgoing, _ in results:
            self._in_flight.pop(outgoing.delivery_id, None)
        by_id = {outgoing.delivery_id: (outgoing, result) for outgoing, result in results}
        for delivery in deliveries:
            outgoing, result = by_id[delivery.pk]
            self._log(delivery, outgoing, result)
            if delivery.state == WebhookDelivery.State.PENDING:
                due = delivery.next_attempt_at
                self._next_retry = min(self._next_retry or due, due)

    def _log(self, delivery: WebhookDelivery, outgoing: Outgoing, result: AttemptResult) -> None:
        context = {
            "message_id": outgoing.message_id,
            "event_id": outgoing.event_id,
            "webhook_id": delivery.pk,
            "url": loggable_url(outgoing.url),
            "attempt": delivery.attempts,
        }
        outcome = f"HTTP {result.status_code}" if result.status_code else result.error
        if delivery.state == WebhookDelivery.State.DELIVERED:
            logger.info("webhook delivered (%s)", outcome, extra=context)
        elif delivery.state == WebhookDelivery.State.FAILED:
            logger.error(
                "webhook failed for good after %d attempts: %s",
                delivery.attempts,
                outcome,
                extra=context,
            )
        else:
            logger.warning(
                "webhook attempt failed: %s; next at %s",
                outcome,
                delivery.next_attempt_at.isoformat(timespec="seconds"),
                extra=context,
            )

    async def _sleep(self, bell: Doorbell) -> None:
        """Until a bell rings, a POST ends, a retry is due or the poll interval passes."""
        timeout = self.config.poll_interval
        if self._next_retry is not None:
            until_retry = (self._next_retry - timezone.now()).total_seconds()
            timeout = max(0.0, min(timeout, until_retry))
            if until_retry <= timeout:
                self._next_retry = None
        waiters = [asyncio.ensure_future(event.wait()) for event in (bell.rang, self._wake)]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        rang = bell.rang.is_set()
        bell.rang.clear()
        if not self._stopping.is_set():
            self._wake.clear()
        if rang and self.config.gather > 0:
            # A POST that ends or stop() cuts the gathering short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.gather)
