"""Requests waiting for the SMSC's answer to their message (``wait`` on /v1/send).

One channel per server process, not one per request: every waiting message
names it (``Message.notify_channel``), and the worker rings it once per batch
of results with the ids whose parts all have an answer. ``SmscAnswers`` then
reads those messages, with their parts, in two queries for all the requests
that wait, and hands each its message. The bell may be lost (the channel
layer drops by design): the same read runs every ``POLL_INTERVAL`` for
everything still waiting, so a lost bell only costs time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.layers import get_channel_layer
from django.db.models import Prefetch

from .events import in_db_thread
from .models import Message, MessagePart
from .per_event_loop import PerEventLoop
from .states import State

logger = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds between looks at the store while requests wait
EARLY_SECONDS = 10.0  # how long an id rung for before its request waited is kept
EARLY_KEPT = 10_000  # past this many such ids, the old ones are forgotten


def smsc_answered(message: Message) -> bool:
    """Every part has had an answer: a state past submitting, or back in the queue
    after an attempt (a retry later, so the request answers 202 now)."""
    return all(
        part.state not in (State.QUEUED, State.SUBMITTING)
        or (part.state == State.QUEUED and part.attempts)
        for part in message.parts.all()
    )


def messages_with_parts(message_ids: list[int]) -> list[Message]:
    """The messages, each with its parts in order (two queries)."""
    parts = Prefetch("parts", queryset=MessagePart.objects.order_by("index"))
    return list(Message.objects.filter(pk__in=message_ids).prefetch_related(parts))


class SmscAnswers:
    """This event loop's waiting requests, and the one listener that serves them."""

    def __init__(self) -> None:
        self.channel = ""
        self._waiting: dict[int, asyncio.Future] = {}
        self._listener: asyncio.Task | None = None
        # Ids rung for before their request began to wait (a fast SMSC): id -> when.
        self._early: dict[int, float] = {}
        self._settling: set[asyncio.Task] = set()

    async def prepare(self) -> str:
        """The channel a waiting message names, for the worker's bell."""
        if not self.channel:
            layer = get_channel_layer()
            self.channel = await layer.new_channel("smsc-answers") if layer else ""
        return self.channel

    async def wait(self, message_id: int, timeout: float) -> Message | None:
        """The message once the SMSC has answered every part, or None after ``timeout``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[message_id] = future
        if self._early.pop(message_id, None) is not None:
            settle = loop.create_task(self._settle([message_id]))
            self._settling.add(settle)
            settle.add_done_callback(self._settling.discard)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            if self._waiting.get(message_id) is future:
                del self._waiting[message_id]

    async def _listen(self) -> None:
        layer = get_channel_layer() if self.channel else None
        looked = time.monotonic()  # when everything waiting was last looked at
        while self._waiting:
            ids: list[int] = []
            if layer is not None:
                try:
                    bell = await asyncio.wait_for(layer.receive(self.channel), POLL_INTERVAL)
                    ids = self._sort_out(bell.get("ids", ()))
                except TimeoutError:
                    pass
                except Exception:  # a broken layer: fall back to polling
                    logger.warning("smsc answers: channel layer failed", exc_info=True)
                    await asyncio.sleep(POLL_INTERVAL)
            else:
                await asyncio.sleep(POLL_INTERVAL)
            if time.monotonic() - looked >= POLL_INTERVAL:  # bells or not, a lost one is found
                ids = list(self._waiting)
                looked = time.monotonic()
            if ids:
                await self._settle(ids)

    def _sort_out(self, rung: list[int]) -> list[int]:
        """The rung ids someone waits for; the others are kept a while, in case
        their request has not begun to wait yet."""
        now = time.monotonic()
        waiting = [i for i in rung if i in self._waiting]
        self._early.update((i, now) for i in rung if i not in self._waiting)
        if len(self._early) > EARLY_KEPT:
            self._early = {i: t for i, t in self._early.items() if now - t < EARLY_SECONDS}
        return waiting

    async def _settle(self, ids: list[int]) -> None:
        try:
            messages = await in_db_thread(messages_with_parts)(ids)
        except Exception:  # the store is away: the waits run out, then answer as things stand
            logger.warning("smsc answers: could not read the store", exc_info=True)
            return
        for message in messages:
            future = self._waiting.get(message.pk)
            if future is not None and not future.done() and smsc_answered(message):
                future.set_result(message)


_answers = PerEventLoop(SmscAnswers)


def smsc_answers() -> SmscAnswers:
    """The running event loop's waiting room."""
    return _answers.get()
