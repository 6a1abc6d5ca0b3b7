"""deliver_sm (and data_sm) from the SMSC, from the read that brings them to their answer.

The client session's read loop queues them here and handles the responses
beside them first; one callback then hands them all to the owner. Each one
handed over is counted until the owner answers it (``respond_deliver``), and
while the owner has ``limit`` of them to answer the session reads no more:
the SMSC waits on TCP and nothing piles up in memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class DeliverIntake:
    """The deliver_sm of one session between their read and their answer."""

    __slots__ = ("queue", "read_done", "room", "unanswered", "limit", "_data_sm", "_dispatch")

    def __init__(self, limit: int, dispatch: Callable[[bytes], object]):
        self.limit = limit  # unanswered ones at which reading pauses
        self._dispatch = dispatch  # the session's handling of one PDU
        self.queue: deque[bytes] = deque()  # read, not yet handed to the owner
        self.read_done = asyncio.Event()  # set when none wait in ``queue``
        self.read_done.set()
        self.room = asyncio.Event()  # set while under ``limit`` unanswered: read on
        self.room.set()
        self.unanswered = 0  # handed to the owner, not yet answered
        # Sequences of data_sm handed to the owner: answered with data_sm_resp, not
        # deliver_sm_resp (rare: most SMSCs send deliver_sm; empty, it costs one test).
        self._data_sm: set[int] = set()

    def after_read(self) -> None:
        """After a read that queued some: have ``read_all`` take them in a callback of
        its own, and stop reading while the owner has its fill of them to answer."""
        if self.read_done.is_set():
            self.read_done.clear()
            asyncio.get_running_loop().call_soon(self.read_all)
        if self.unanswered + len(self.queue) >= self.limit:
            self.room.clear()  # read_all decides again

    def read_all(self) -> None:
        """Hand every queued deliver_sm to the owner, all at once.

        An SMSC sends up to its window of them at once: a hundred receipts take
        milliseconds to read. The submit_sm_resp beside them were handled as they
        were cut out of the stream, and the window is refilled from them first (the
        feed's wake-up is queued ahead of this callback). In one go, not a few per
        turn of the event loop: with HTTP on the same loop (the embedded set-up)
        each turn can last a request, and slices doubled the receipts' p99.
        """
        queue = self.queue
        dispatch = self._dispatch
        while queue:
            dispatch(queue.popleft())
        self.read_done.set()
        if self.unanswered >= self.limit:
            self.room.clear()
        else:  # e.g. those read were refused at once: nothing for the owner to answer
            self.room.set()

    def taken_data_sm(self, sequence: int) -> None:
        """A data_sm went to the owner (a deliver_sm only counts ``unanswered``)."""
        self._data_sm.add(sequence)
        self.unanswered += 1

    def answered(self, sequence: int) -> bool:
        """The owner answers ``sequence``: True if it was a data_sm."""
        if self.unanswered > 0:
            self.unanswered -= 1
            if self.unanswered < self.limit:
                self.room.set()
        if self._data_sm and sequence in self._data_sm:
            self._data_sm.discard(sequence)
            return True
        return False

    def drop(self) -> None:
        """The link is gone: those never handed over are not answered (the SMSC sends
        them again)."""
        self.queue.clear()
        self.read_done.set()
