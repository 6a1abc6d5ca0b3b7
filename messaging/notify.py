"""Ringing the bells after a commit.

The channel layer may drop any of these (it is at-most-once by design); every
listener also looks at the store on a timer, so a lost bell only costs time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from messaging.store import Notifications

logger = logging.getLogger(__name__)

EVENTS_GROUP = "events"  # SSE and WebSocket consumers listen here
WORKER_CHANNEL = "smpp.outbox"  # the worker wakes up when new parts are queued
QUERY_CHANNEL = "smpp.query"  # /v1/query asks a bound worker to query_sm the SMSC
# Group membership expires in the channel layer (a day by default): renew it.
GROUP_RENEW_SECONDS = 600


class BellCounter:
    """Bells this process dropped because their channel was full (a listener not
    reading): expected under bursts, and harmless, since the store is the record and
    every listener also reads it on a timer. Counted, never a traceback each."""

    def __init__(self) -> None:
        self.dropped = 0


BELLS = BellCounter()


async def publish(notifications: Notifications) -> None:
    """Tell listeners about new events and waiters that their answer is in."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        if notifications.last_event_id is not None:
            await layer.group_send(
                EVENTS_GROUP, {"type": "events.new", "last_id": notifications.last_event_id}
            )
        for channel, answers in notifications.waiters.items():
            try:
                await layer.send(channel, {"type": "message.answered", "answers": answers})
            except ChannelFull:  # that waiter is not reading; the others still get theirs
                BELLS.dropped += 1
                logger.debug("bell dropped: channel %s is full", channel)
    except Exception:  # the store has it all; a broken layer only delays listeners
        logger.warning("could not publish notifications", exc_info=True)


async def ring_worker() -> None:
    """Wake a worker: new parts are queued."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.send(WORKER_CHANNEL, {"type": "outbox.new"})
    except ChannelFull:  # the worker has bells enough to wake it
        BELLS.dropped += 1
    except Exception:  # a broken layer: the worker polls anyway
        logger.debug("worker bell not rung", exc_info=True)


def query_channel(connector: str) -> str:
    """Where the workers of ``connector`` take /v1/query's questions: an SMSC answers
    query_sm only for the ids it gave ("": the default connector's workers)."""
    return f"{QUERY_CHANNEL}.{connector}" if connector else QUERY_CHANNEL


async def ask_smsc(question: dict, timeout: float, connector: str = "") -> dict | None:
    """Have a bound worker of ``connector`` send query_sm; None when none answers in time."""
    layer = get_channel_layer()
    if layer is None:
        return None
    reply_channel = await layer.new_channel()
    try:
        await layer.send(query_channel(connector), {**question, "reply_channel": reply_channel})
        return await asyncio.wait_for(layer.receive(reply_channel), timeout)
    except Exception:  # no worker, a full channel, a timeout: the store's answer stands
        return None


def poll_interval() -> float:
    return settings.EVENTS_POLL_INTERVAL


class Doorbell:
    """Listens on a channel of its own and remembers that a bell rang.

    One task receives from the layer for the whole stream, so no receive is
    ever cancelled half-way; the stream waits on an asyncio.Event instead.
    Link state messages (when asked for) are queued for the stream to send.
    """

    def __init__(self, layer: BaseChannelLayer | None, groups: tuple[str, ...]) -> None:
        self.layer = layer
        self.groups = groups
        self.channel = ""
        self.rang = asyncio.Event()
        self.link_states: asyncio.Queue[dict] = asyncio.Queue(maxsize=100)
        self._task: asyncio.Task | None = None
        self._joined_at = 0.0

    async def start(self) -> None:
        if self.layer is None:
            return
        try:
            self.channel = await self.layer.new_channel()
            await self._join()
        except Exception:  # a broken layer only slows us down to the poll interval
            logger.warning("event stream runs without bells", exc_info=True)
            self.channel = ""
            return
        self._task = asyncio.create_task(self._listen())

    async def _join(self) -> None:
        for group in self.groups:
            await self.layer.group_add(group, self.channel)
        self._joined_at = asyncio.get_running_loop().time()

    async def renew(self) -> None:
        """Join the groups again before the layer forgets us."""
        if self.channel and asyncio.get_running_loop().time() - self._joined_at > (
            GROUP_RENEW_SECONDS
        ):
            with contextlib.suppress(Exception):
                await self._join()

    async def _listen(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bell may have been lost: look at the store, then listen again
                logger.debug("doorbell receive failed", exc_info=True)
                self.rang.set()
                await asyncio.sleep(min(poll_interval(), 1.0))
                continue
            if message.get("type") == "link.state":
                with contextlib.suppress(asyncio.QueueFull):
                    self.link_states.put_nowait(message)
            self.rang.set()

    async def wait(self, timeout: float) -> None:
        """Until a bell rings or ``timeout`` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.rang.wait(), timeout)
        self.rang.clear()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.channel:
            for group in self.groups:
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, self.channel)
