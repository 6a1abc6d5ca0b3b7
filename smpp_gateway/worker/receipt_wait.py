"""Accepted submits' results waiting a moment for their receipt (``ReceiptWait``).

A fast SMSC sends the receipt a moment after the response. Written apart, the
part and its message are locked and updated twice; written in one batch, once.
So an accepted submit whose receipt will come (and that no request waits for)
is held for ``receipt_wait`` seconds: its receipt takes it along, or the timer
writes it alone. A crash meanwhile leaves the part in flight, to be sent again
marked possibly duplicated, as a crash before any write does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from messaging.store import ClaimedPart, ReceiptIn, SubmitOutcome
from smpp.smsc_ids import match_key

if TYPE_CHECKING:
    from smpp_gateway.worker.results import Pending


class RecentIds:
    """Ids seen in the last ``keep`` to 2 x ``keep`` seconds (two generations of a set)."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._since = time.monotonic()

    def _rotate(self) -> None:
        now = time.monotonic()
        if now - self._since > self.keep:
            self._previous, self._current, self._since = self._current, set(), now

    def add(self, ids: Iterable[str]) -> None:
        self._rotate()
        self._current.update(ids)

    def seen(self, ids: Iterable[str]) -> bool:
        self._rotate()
        return any(i in self._current or i in self._previous for i in ids)


class ReceiptWait:
    """Results held under their SMSC id's match key (smpp.smsc_ids) until their
    receipt comes or ``wait`` runs out; released into ``pending.outcomes``."""

    def __init__(self, pending: Pending, wait: float, most: int) -> None:
        self.pending = pending
        self.wait = wait
        self.most = most  # results held at most (memory), beyond: written at once
        self.held: dict[str, tuple[float, SubmitOutcome]] = {}
        self._timer: asyncio.TimerHandle | None = None
        # Ids of receipts that came before their response, and of results whose wait
        # for their receipt ran out.
        self._receipts_seen = RecentIds(wait)
        self._released = RecentIds(2.0)
        self.late_share = 0.0  # share of receipts that found no result waiting, lately

    def try_hold(self, part: ClaimedPart, outcome: SubmitOutcome) -> bool:
        """Hold an accepted submit's result if its receipt is worth waiting for: one
        asked for at the end (``final``), no request waiting on the part, room left,
        and its receipt not already come (it overtook the response)."""
        if (
            part.register == "final"
            and not part.waited
            and self.wait > 0
            and len(self.held) < self.most
            and not self._receipts_seen.seen((key := match_key(outcome.smsc_id),))
        ):
            self.hold(key, outcome)
            return True
        return False

    def hold(self, key: str, outcome: SubmitOutcome) -> None:
        """Hold ``outcome`` under ``key`` for ``wait`` seconds."""
        loop = asyncio.get_running_loop()
        earlier = self.held.pop(key, None)
        if earlier is not None:  # an id that one key stands for twice: write, never drop, it
            self.pending.outcomes.append(earlier[1])
        self.held[key] = (loop.time() + self.wait, outcome)
        if self._timer is None:
            self._timer = loop.call_later(self.wait, self.release)

    def release(self, everything: bool = False) -> None:
        """Hand the results whose wait is over (or all of them) to the next write."""
        if self._timer is not None:
            self._timer.cancel()  # one timer at a time (this may be it)
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        released = []
        outcomes = self.pending.outcomes
        for key, (due, outcome) in self.held.items():
            if due > now and not everything:
                # In holding order, so in due order: the rest are younger.
                self._timer = loop.call_at(due, self.release)
                break
            released.append(key)
            outcomes.append(outcome)
        self._released.add(released)
        for key in released:
            del self.held[key]
        if released:
            self.pending.wanted.set()

    def receipt_came(self, receipt: ReceiptIn) -> None:
        """A receipt came: its submit's result, if held, goes in the same write.

        One that finds none either came after its result was written alone (late:
        counted in ``late_share``) or overtook its response (remembered, so that
        the result, when it comes, does not wait for it).
        """
        late = False
        if not self._take(receipt):
            late = self._released.seen(receipt.match_keys)
            if not late:
                self._receipts_seen.add(receipt.match_keys)
        self.late_share += (late - self.late_share) / 64

    def _take(self, receipt: ReceiptIn) -> bool:
        held = self.held
        for key in receipt.match_keys:  # its own key first, as the store matches
            entry = held.pop(key, None)
            if entry is not None:
                self.pending.outcomes.append(entry[1])
                return True
        return False
