"""Storing the messages of concurrent requests together (group commit).

A transaction per request makes the store's commit, not the request, the unit
of work: every request pays a round trip and a WAL flush, and on SQLite the
writers queue for the file's lock one by one. ``MessageIntake`` gathers what
requests hand it while the previous batch is being written and stores the lot
with ``create_messages`` in one transaction: under load a batch grows, so the
cost per message falls as the rate rises; alone, a request waits for no one.

While the worker of the same process waits for work (the embedded set-up), a
batch's messages are stored already claimed and handed to it
(``messaging.handoff``): no bell, no claim. Otherwise they are queued and the
worker's bell rung.

One intake per event loop (a server process has one). A batch that fails as a
whole is retried message by message, so one bad message (an Idempotency-Key
another request took first) fails alone.

Every intake of the process writes on one ``DatabaseThread`` that keeps its
connection: a connection per batch cost each request a connect (on SQLite:
open the file, set its pragmas, register Django's functions), an eighth of the
embedded server's CPU at one client (issue 23).
"""

from __future__ import annotations

import asyncio
import logging

from django.db import DatabaseError

from messaging.handoff import local_taker
from messaging.models import Message
from messaging.notify import ring_worker
from messaging.orm_thread import DatabaseThread
from messaging.per_event_loop import PerEventLoop
from messaging.store import HandOver, NewMessage, create_handed_over, create_messages

logger = logging.getLogger(__name__)

MAX_BATCH = 1000  # messages in one transaction
# The process's intake writes, one batch after another (SQLite has one writer anyway).
INTAKE_THREAD = DatabaseThread("intake")


class MessageIntake:
    """One event loop's queue of messages to store, and the task that writes it."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._pending: list[tuple[NewMessage, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def store(self, new: NewMessage) -> Message:
        """Store ``new`` (queued for the worker) and return it with its id.

        Raises what storing it alone would raise (IntegrityError, DatabaseError).
        """
        future = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        # shield: a request that goes away does not stop the write of its batch
        return await asyncio.shield(future)

    async def _write_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            queued = True  # unless every message went to this process's worker
            try:
                messages, queued = await self._store([new for new, _ in batch])
            except DatabaseError:
                await self._write_one_by_one(batch)
            except Exception as exc:  # a bug, not the store: these requests fail, others go on
                logger.exception("could not store %d messages", len(batch))
                _fail(batch, exc)
            except BaseException as exc:  # cancelled (the loop is closing): nobody is left out
                _fail(batch + self._pending, exc)
                self._pending.clear()
                raise
            else:
                for (_, future), message in zip(batch, messages, strict=True):
                    if not future.done():
                        future.set_result(message)
            if queued:
                await ring_worker()  # one bell per batch

    @staticmethod
    async def _store(batch: list[NewMessage]) -> tuple[list[Message], bool]:
        """The batch stored, handed to this process's worker as far as it takes
        them; and whether any message was queued instead (the bell is due)."""
        taker = local_taker()
        if taker is None:
            return await INTAKE_THREAD.run(create_messages, batch), True
        hand_over = HandOver(taker.worker_id, taker.lease_seconds, taker.room(), taker.connector)
        messages, parts = await INTAKE_THREAD.run(create_handed_over, batch, hand_over)
        if parts:
            taker.take(parts)
        return messages, len({part.message_id for part in parts}) < len(messages)

    async def _write_one_by_one(self, batch: list[tuple[NewMessage, asyncio.Future]]) -> None:
        for new, future in batch:
            try:
                (message,) = await INTAKE_THREAD.run(create_messages, [new])
            except Exception as exc:  # noqa: BLE001 - handed to the request that sent it
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(message)


def _fail(batch: list[tuple[NewMessage, asyncio.Future]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


_intakes = PerEventLoop(MessageIntake)


def message_intake() -> MessageIntake:
    """The running event loop's intake."""
    return _intakes.get()
