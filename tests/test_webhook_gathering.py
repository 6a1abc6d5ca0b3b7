"""The webhook sender's wait between rounds: after the events bell it gathers
for ``SenderConfig.gather`` so that one round plans the events of many small
transactions, and nothing but the bell makes it gather.

The waits asserted are minimums (it did gather) or generous maximums (it did
not sit out a 30 s gather); nothing here measures speed.
"""

from __future__ import annotations

import asyncio
import time

from messaging.notify import Doorbell
from messaging.webhooks.delivery import SenderConfig, WebhookSender


def sleep_once(config: SenderConfig, ring: bool, stop_after: float | None = None) -> float:
    """Seconds one ``_sleep`` of a sender with ``config`` takes."""

    async def main() -> float:
        sender = WebhookSender(config)
        bell = Doorbell(None, ())  # no layer: rung by hand, as the layer's listener does
        if ring:
            bell.rang.set()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, sender.stop)
        started = time.monotonic()
        await sender._sleep(bell)  # noqa: SLF001 - the wait under test
        return time.monotonic() - started

    return asyncio.run(main())


def test_after_a_bell_the_sender_gathers():
    assert sleep_once(SenderConfig(poll_interval=5, gather=0.2), ring=True) >= 0.2


def test_without_a_bell_it_does_not_gather():
    # The poll interval passes (a bell may have been lost): straight to the round.
    assert sleep_once(SenderConfig(poll_interval=0.05, gather=30), ring=False) < 10


def test_stop_cuts_the_gathering_short():
    assert sleep_once(SenderConfig(poll_interval=5, gather=30), ring=True, stop_after=0.05) < 10
