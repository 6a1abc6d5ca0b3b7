"""New messages handed straight to the SMPP worker of the same process.

In the embedded set-up (``manage.py serve``) the API and the worker share one
event loop. A message stored while the worker waits for work used to pass a
bell and a claim: a second transaction, to read back what the first had just
written; at one message a request, the worker's largest cost. Now
the worker, while it waits for work, offers itself here (``PartTaker``); the
API's intake stores the messages due now already claimed under its lease
(``messaging.store.create_handed_over``) and, after the commit, hands it the
parts. The store stays the record of truth: the rows are exactly those a claim
would have written, so a crash, a lost link or a stop treats them as claimed
parts (leases, ``requeue_abandoned``, released unsent).

Only while the worker waits for work: its last claim found the queue empty, so
nothing queued earlier is overtaken. Anywhere else (a worker of its own process,
a worker busy with a backlog) messages are queued and the bell rung as before.
"""

from __future__ import annotations

from typing import Protocol

from messaging.per_event_loop import PerEventLoop
from messaging.store import ClaimedPart


class PartTaker(Protocol):
    """A worker of this event loop that takes new parts without a claim."""

    worker_id: str
    lease_seconds: float
    connector: str  # only messages for this connector are handed to it

    def room(self) -> int:
        """Parts it takes now; 0 while it has work of its own (or no link)."""
        ...

    def take(self, parts: list[ClaimedPart]) -> None:
        """Parts stored claimed under its lease, after their commit. Never raises:
        parts it can no longer send go back to the queue."""
        ...


class _Offer:
    """The one taker of an event loop, if any."""

    def __init__(self) -> None:
        self.taker: PartTaker | None = None


_offers = PerEventLoop(_Offer)


def offer(taker: PartTaker) -> None:
    """``taker`` takes new parts of this event loop's API (see ``PartTaker.room``)."""
    _offers.get().taker = taker


def withdraw(taker: PartTaker) -> None:
    """``taker`` takes no more (its link has gone, it stops)."""
    current = _offers.get()
    if current.taker is taker:
        current.taker = None


def local_taker() -> PartTaker | None:
    """The worker of this event loop that takes new parts now, if one does."""
    taker = _offers.get().taker
    return taker if taker is not None and taker.room() > 0 else None
