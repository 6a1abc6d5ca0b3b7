"""Requests waiting for the SMSC's answer to their message (``wait`` on /v1/send).

One channel per server process, not one per request: every waiting message
names it (``Message.notify_channel``), and the worker rings it once per batch
of results with the answer of each message whose parts all have one: its
state, command_status and SMSC ids (``store.SmscAnswer``). The waiting request
answers from that, without reading the store. The bell may be lost (the
channel layer drops by design): every ``POLL_INTERVAL`` the store is read for
everything still waiting, so a lost bell only costs time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from channels.layers import get_channel_layer
from django.db.models import Prefetch

from messaging import settlement
from messaging.health import any_worker_bound
from messaging.models import Message, MessagePart
from messaging.orm_thread import in_db_thread
from messaging.per_event_loop import PerEventLoop
from messaging.store import SmscAnswer

logger = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds between looks at the store while requests wait
LINK_REFRESH = 1.0  # seconds a "some worker is bound" answer is trusted
EARLY_SECONDS = 10.0  # how long an id rung for before its request waited is kept
EARLY_KEPT = 10_000  # past this many such ids, the old ones are forgotten


def smsc_answered(message: Message) -> bool:
    """Whether the request waiting for ``message`` is answered now: the settlement
    rule's ``answer_due`` (the one the worker's bell follows), read from its parts."""
    return settlement.smsc_answered((part.state, part.attempts) for part in message.parts.all())


def read_answers(message_ids: list[int]) -> list[SmscAnswer]:
    """The answers of those of the messages the SMSC has answered, read from the
    store (two queries)."""
    parts = Prefetch("parts", queryset=MessagePart.objects.order_by("index"))
    messages = Message.objects.filter(pk__in=message_ids).prefetch_related(parts)
    return [
        (m.pk, m.state, m.command_status, [p.smsc_id for p in m.parts.all()])
        for m in messages
        if smsc_answered(m)
    ]


class LinkWatch:
    """Whether some SMPP worker is bound, as the heartbeats say, read at most once
    every ``LINK_REFRESH`` seconds per event loop (concurrent callers share the read).

    With no worker bound a send has nothing to wait for: it answers 202 at once
    instead of after ``SMS_SEND_WAIT``. A read that fails counts as bound (the
    send waits, as it did before).
    """

    def __init__(self, refresh: float = LINK_REFRESH) -> None:
        self.refresh = refresh
        self._bound = True
        self._read_at = -math.inf
        self._reading: asyncio.Future | None = None

    async def bound(self) -> bool:
        if time.monotonic() - self._read_at < self.refresh:
            return self._bound
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._reading)

    async def _read(self) -> bool:
        try:
            self._bound = await in_db_thread(any_worker_bound)()
        except Exception:
            logger.warning("could not read the link status; waiting as usual", exc_info=True)
            self._bound = True
        self._read_at = time.monotonic()
        return self._bound


class SmscAnswers:
    """This event loop's waiting requests, and the one listener that serves them."""

    def __init__(self) -> None:
        self.channel = ""
        self._waiting: dict[int, asyncio.Future] = {}
        self._listener: asyncio.Task | None = None
        # Answers rung for before their request began to wait (a fast SMSC):
        # id -> (when, answer).
        self._early: dict[int, tuple[float, SmscAnswer]] = {}
        self.link = LinkWatch()

    async def prepare(self) -> str:
        """The channel a waiting message names, for the worker's bell."""
        if not self.channel:
            layer = get_channel_layer()
            self.channel = await layer.new_channel("smsc-answers") if layer else ""
        return self.channel

    async def wait(self, message_id: int, timeout: float) -> SmscAnswer | None:
        """The message's answer once the SMSC has answered every part, or None after
        ``timeout``."""
        early = self._early.pop(message_id, None)
        if early is not None:
            return early[1]
        future = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
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
            if layer is not None:
                try:
                    bell = await asyncio.wait_for(layer.receive(self.channel), POLL_INTERVAL)
                    self._hand_out(bell.get("answers", ()))
                except TimeoutError:
                    pass
                except Exception:  # a broken layer: fall back to polling
                    logger.warning("smsc answers: channel layer failed", exc_info=True)
                    await asyncio.sleep(POLL_INTERVAL)
            else:
                await asyncio.sleep(POLL_INTERVAL)
            if self._waiting and time.monotonic() - looked >= POLL_INTERVAL:
                # Bells or not, a lost one is found.
                looked = time.monotonic()
                await self._read(list(self._waiting))

    def _hand_out(self, answers: list[SmscAnswer]) -> None:
        """Each answer to its waiting request; the others are kept a while, in case
        their request has not begun to wait yet."""
        now = time.monotonic()
        for answer in answers:
            message_id = answer[0]
            future = self._waiting.get(message_id)
            if future is None:
                self._early[message_id] = (now, answer)
            elif not future.done():
                future.set_result(answer)
        if len(self._early) > EARLY_KEPT:
            self._early = {i: e for i, e in self._early.items() if now - e[0] < EARLY_SECONDS}

    async def _read(self, message_ids: list[int]) -> None:
        try:
            answers = await in_db_thread(read_answers)(message_ids)
        except Exception:  # the store is away: the waits run out, then answer as things stand
            logger.warning("smsc answers: could not read the store", exc_info=True)
            return
        self._hand_out([answer for answer in answers if answer[0] in self._waiting])


_answers = PerEventLoop(SmscAnswers)


def smsc_answers() -> SmscAnswers:
    """The running event loop's waiting room."""
    return _answers.get()
