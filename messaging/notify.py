"""Ringing the bells after a commit.

The channel layer may drop any of these (it is at-most-once by design); every
listener also looks at the store on a timer, so a lost bell only costs time.
"""

from __future__ import annotations

import asyncio
import logging

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from .store import Notifications

logger = logging.getLogger(__name__)

EVENTS_GROUP = "events"  # SSE and WebSocket consumers listen here
WORKER_CHANNEL = "smpp.outbox"  # the worker wakes up when new parts are queued
QUERY_CHANNEL = "smpp.query"  # /v1/query asks a bound worker to query_sm the SMSC


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


async def ask_smsc(question: dict, timeout: float) -> dict | None:
    """Have a bound worker send query_sm; None when no worker answers in time."""
    layer = get_channel_layer()
    if layer is None:
        return None
    reply_channel = await layer.new_channel()
    try:
        await layer.send(QUERY_CHANNEL, {**question, "reply_channel": reply_channel})
        return await asyncio.wait_for(layer.receive(reply_channel), timeout)
    except Exception:  # no worker, a full channel, a timeout: the store's answer stands
        return None
