"""Webhooks: receipts, final states and incoming messages POSTed to the clients' URLs.

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
   HMAC-SHA256 (``sign``), only to addresses the policy allows (no loopback,
   private... unless ``WEBHOOK_ALLOW_PRIVATE``: ``webhook_targets``, enforced
   on the address connected to by ``webhook_transport``), and *record* every
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
import hashlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
    transaction,
)
from django.utils import timezone

from messaging.events import EventCursor, event_json
from messaging.models import ApiKey, Event, Message, WebhookAttempt, WebhookCursor, WebhookDelivery
from messaging.notify import EVENTS_GROUP, Doorbell
from messaging.states import FINAL_STATES
from messaging.store.sql import Sql
from messaging.url_secrets import loggable_url, redact_url
from messaging.webhooks.targets import (
    DestinationRefused,
    InvalidCallbackURL,
    clean_callback_url,
    private_allowed,
)
from messaging.webhooks.transport import GuardedTransport

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-SMSAPI-Signature"
EVENT_ID_HEADER = "X-SMSAPI-Event-Id"
USER_AGENT = "smsapi-webhooks/1"
CURSOR_NAME = "webhooks"  # the WebhookCursor row (made by the migration)
EXCERPT_BYTES = 500  # of the receiver's answer, kept with the attempt
LEASE_MARGIN = 30.0  # seconds a claim outlives the POST timeout


def _store_outages() -> tuple[type[Exception], ...]:
    """What a store outage raises (database down, locked, pool exhausted): Django's
    errors, and the drivers' own from the raw cursors of ``store_sql``."""
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


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-SMSAPI-Signature`` value: ``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``.

    The timestamp is signed with the body so that a receiver can refuse an old
    request played again (docs/webhooks.md shows the check).
    """
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# --- planning: events -> deliveries ------------------------------------------------------


def _planning_sql(postgres: bool) -> dict[str, str]:
    """The planner's statements: each round runs them all, and building them with
    the ORM cost more than running them (a round, ~65 events under load, took
    2-5 ms of CPU, nearly all of it in Django's query compiler)."""
    event, message, key = (m._meta.db_table for m in (Event, Message, ApiKey))
    cursor = WebhookCursor._meta.db_table
    state = "e.payload->>'state'" if postgres else "json_extract(e.payload, '$.state')"
    final = ", ".join(f"'{value}'" for value in sorted(FINAL_STATES))
    return {
        "new_events": f"SELECT 1 FROM {event} WHERE id > COALESCE("
        f"(SELECT last_event_id FROM {cursor} WHERE name = %s), -1) LIMIT 1",
        "lock_cursor": f"SELECT id, last_event_id FROM {cursor} WHERE name = %s"
        + (" FOR UPDATE" if postgres else ""),
        "move_cursor": f"UPDATE {cursor} SET last_event_id = %s, updated_at = %s WHERE id = %s",
        # Receipts and final status events of messages with a URL, every incoming message.
        "webhook_events": f"SELECT e.id, e.type, m.callback_url, k.default_callback_url, "
        f"m.api_key_id FROM {event} e "
        f"LEFT JOIN {message} m ON m.id = e.message_id "
        f"LEFT JOIN {key} k ON k.id = m.api_key_id "
        f"WHERE e.id > %s AND e.id <= %s AND (e.type = '{Event.Type.MO}' OR ("
        f"(m.callback_url <> '' OR k.default_callback_url <> '') AND (e.type = "
        f"'{Event.Type.RECEIPT}' OR (e.type = '{Event.Type.STATUS}' AND {state} IN ({final})))"
        f")) ORDER BY e.id",
    }


PLANNING_SQL = {postgres: _planning_sql(postgres) for postgres in (False, True)}


def webhook_events(sql: Sql, after: int, upto: int) -> list[tuple[int, str, str, int | None]]:
    """``(event id, type, url, api key id)`` of the events ``after < id <= upto``
    that call for a webhook, in id order; for incoming messages url and key are
    empty (they go to every receiving key: ``incoming_receivers``).

    Receipts and final status events go to their message's ``callback_url``,
    else its key's default; without either, nowhere. Most events call for
    nothing, and the payloads are not read: reading every event whole was most
    of the planner's time.
    """
    rows = sql.execute(PLANNING_SQL[sql.postgres]["webhook_events"], (after, upto))
    return [
        (pk, type_, "", None) if type_ == Event.Type.MO else (pk, type_, own or default, key_id)
        for pk, type_, own, default, key_id in rows
    ]


def incoming_receivers() -> list[tuple[str, int | None]]:
    """``(url, api key id)`` of everyone an incoming message is posted to."""
    receivers: list[tuple[str, int | None]] = [
        (url, key_id)
        for key_id, url in ApiKey.objects.filter(receive_incoming=True, revoked_at__isnull=True)
        .exclude(default_callback_url="")
        .order_by("id")
        .values_list("id", "default_callback_url")
    ]
    if settings.WEBHOOK_INCOMING_URL:
        # Stored with each delivery: like a client's URL, never with an API key in it.
        receivers.append((redact_url(settings.WEBHOOK_INCOMING_URL), None))
    return receivers


def plan_deliveries(sql: Sql, after: int, upto: int, now: datetime) -> list[WebhookDelivery]:
    """The deliveries the events ``after < id <= upto`` call for (unsaved), in event order."""
    events = webhook_events(sql, after, upto)
    incoming = incoming_receivers() if any(e[1] == Event.Type.MO for e in events) else []
    deliveries = []
    for event_id, type_, url, key_id in events:
        receivers = incoming if type_ == Event.Type.MO else [(url, key_id)]
        deliveries.extend(
            WebhookDelivery(
                event_id=event_id, api_key_id=key_id, url=url, next_attempt_at=now, created_at=now
            )
            for url, key_id in receivers
        )
    return deliveries


class Planner:
    """Moves the shared cursor over the event log and creates the deliveries.

    Keeps one ``EventCursor`` for its sender's life, so that a hole in the ids
    (PostgreSQL: a transaction not yet committed) is waited for, as the live
    streams do, rather than skipped. Synchronous: call it from a thread.
    """

    def __init__(self) -> None:
        self.cursor: EventCursor | None = None

    def plan(self, limit: int = 500) -> int:
        """Plan the next events (up to ``limit``); returns how far the cursor moved
        (in ids: ``limit`` or more when there may be more to read)."""
        now = timezone.now()
        with Sql() as sql:
            statements = PLANNING_SQL[sql.postgres]
            if not sql.execute(statements["new_events"], (CURSOR_NAME,)):
                # Nothing new: no transaction (on SQLite each one takes the write lock).
                return 0
        with transaction.atomic(), Sql() as sql:
            rows = sql.execute(statements["lock_cursor"], (CURSOR_NAME,))
            if not rows:  # the migration makes it; if it is gone, start with new events
                self.cursor = EventCursor(None)
                WebhookCursor.objects.create(
                    name=CURSOR_NAME, last_event_id=self.cursor.begin(), updated_at=now
                )
                return 0
            pk, position = rows[0]
            if self.cursor is None:
                self.cursor = EventCursor(position)
            else:  # another sender may have moved it on
                self.cursor.position = position
            after, upto = self.cursor.advance(limit)
            if upto == position:
                return 0
            WebhookDelivery.objects.bulk_create(plan_deliveries(sql, after, upto, now))
            sql.execute(statements["move_cursor"], (upto, sql.dt(now), pk))
        return upto - after


# --- claiming and recording ---------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One POST to make, with everything read from the store beforehand."""

    delivery_id: int
    url: str
    event_id: int
    event_type: str
    message_id: int | None
    body: bytes
    secret: str
    attempt: int  # 1 for the first try


@dataclass(frozen=True)
class AttemptResult:
    """What one POST came to."""

    delivery_id: int
    at: datetime
    status_code: int | None = None
    error: str = ""
    duration_ms: int = 0
    excerpt: str = ""
    # No use trying again (a refused destination the URL names itself): failed at once.
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(limit: int, lease_seconds: float) -> list[Outgoing]:
    """Take up to ``limit`` due deliveries, oldest first, leased for ``lease_seconds``.

    On PostgreSQL the rows are locked with SKIP LOCKED, so several senders
    share the work; SQLite serialises writers, which has the same effect.
    """
    now = timezone.now()
    due = WebhookDelivery.objects.filter(
        state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    )
    if not due.exists():  # the usual case when idle: no transaction, no write lock
        return []
    with transaction.atomic():
        ids = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        WebhookDelivery.objects.filter(id__in=ids).update(
            next_attempt_at=now + timedelta(seconds=lease_seconds)
        )
        rows = list(
            WebhookDelivery.objects.filter(id__in=ids)
            .select_related("event", "api_key")
            .order_by("id")
        )
    return [
        Outgoing(
            delivery_id=row.pk,
            url=row.url,
            event_id=row.event_id,
            event_type=row.event.type,
            message_id=row.event.message_id,
            body=event_json(row.event).encode("utf-8"),
            secret=row.api_key.webhook_secret if row.api_key else settings.WEBHOOK_SECRET,
            attempt=row.attempts + 1,
        )
        for row in rows
    ]


def retry_delay(attempts: int, backoff: Sequence[float]) -> float:
    """Seconds to wait after the ``attempts``-th failure (the last delay repeats)."""
    return backoff[min(attempts, len(backoff)) - 1] if backoff else 0.0


def record_results(
    results: Sequence[AttemptResult], max_attempts: int, backoff: Sequence[float]
) -> list[WebhookDelivery]:
    """Keep every attempt and move each delivery on: delivered, failed for good, or
    due again after its backoff. Returns the deliveries as they now are."""
    if not results:
        return []
    with transaction.atomic():
        deliveries = WebhookDelivery.objects.select_for_update().in_bulk(
            [r.delivery_id for r in results]
        )
        attempts = []
        changed = []
        for result in results:
            delivery = deliveries.get(result.delivery_id)
            if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
                continue
            delivery.attempts += 1
            delivery.last_status = result.status_code
            delivery.last_error = result.error[:200]
            if result.ok:
                delivery.state = WebhookDelivery.State.DELIVERED
                delivery.delivered_at = result.at
            elif result.final or delivery.attempts >= max_attempts:
                delivery.state = WebhookDelivery.State.FAILED
            else:
                delivery.next_attempt_at = result.at + timedelta(
                    seconds=retry_delay(delivery.attempts, backoff)
                )
            attempts.append(
                WebhookAttempt(
                    delivery=delivery,
                    number=delivery.attempts,
                    at=result.at,
                    status_code=result.status_code,
                    error=result.error[:200],
                    duration_ms=result.duration_ms,
                    response_excerpt=result.excerpt[:EXCERPT_BYTES],
                )
            )
            changed.append(delivery)
        WebhookAttempt.objects.bulk_create(attempts)
        WebhookDelivery.objects.bulk_update(
            changed,
            ["attempts", "last_status", "last_error", "state", "delivered_at", "next_attempt_at"],
        )
    return changed


# --- posting -------------------------------------------------------------------------------


async def post(client: httpx.AsyncClient, outgoing: Outgoing, timeout: float) -> AttemptResult:
    """POST one delivery; any answer or failure becomes an ``AttemptResult`` (never raises)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: str(outgoing.event_id),
        "X-SMSAPI-Event-Type": outgoing.event_type,
        "X-SMSAPI-Delivery-Attempt": str(outgoing.attempt),
    }
    if outgoing.secret:
        headers[SIGNATURE_HEADER] = sign(outgoing.secret, outgoing.body, int(time.time()))
    at = timezone.now()
    started = time.monotonic()
    status_code = None
    error = ""
    final = False
    excerpt = b""
    try:
        # A total bound: httpx's timeout is per read, a trickling receiver could go on.
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", outgoing.url, content=outgoing.body, headers=headers
            ) as response:
                status_code = response.status_code
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_BYTES:
                        break
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except DestinationRefused as exc:  # the address policy: nothing was sent
        error, final = str(exc), exc.permanent
    except Exception as exc:  # connection refused, TLS, bad URL...: tried again later
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if status_code is not None and error:
        error = ""  # the status came; only the (optional) body was cut short
    return AttemptResult(
        delivery_id=outgoing.delivery_id,
        at=at,
        status_code=status_code,
        error=loggable_url(error),
        duration_ms=int((time.monotonic() - started) * 1000),
        excerpt=excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"),
        final=final,
    )


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
        self._executor: ThreadPoolExecutor | None = None
        self._task_failure: BaseException | None = None  # what killed a POST's task

    def stop(self) -> None:
        """Finish the POSTs in flight, record them and return from ``run``."""
        self._stopping.set()
        self._wake.set()

    async def _db(self, func, *args):
        """Run ORM code on the sender's own database thread."""

        def call():
            try:
                return func(*args)
            except Exception:
                connections.close_all()  # a broken connection must not poison the next call
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def run(self) -> None:
        """Serve until ``stop()``. A store outage is waited out (logged once, then a
        line a round); anything else unexpected, out of a round or a POST's task, is
        logged with its traceback and raised from here, so that the process exits
        and its supervisor restarts it, rather than the sender dying silently."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="webhook-db")
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
            with contextlib.suppress(Exception):
                await self._db(connections.close_all)
            self._executor.shutdown(wait=True)

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
