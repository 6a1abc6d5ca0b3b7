"""A first-come, first-served lock: SQLite's writers of one process take turns.

SQLite has one writer at a time per database file. A connection that finds
the write lock taken polls for it, sleeping 1, 2, 5 ... then 100 ms between
tries (SQLite's busy handler), so a writer that has waited a while keeps
sleeping past the moment the lock frees, and one that writes back to back
(the worker, the intake) can take the lock again and again ahead of it. Under
load a batch waited past the busy timeout and was refused ("database is
locked"). Writers of the same process queue here instead: in arrival order,
each woken the moment the one before commits.
"""

from __future__ import annotations

import threading
from collections import deque


class WriterQueue:
    """A lock handed to its waiters in the order they came (no barging)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this queue's turn; False if it did not come."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=timeout):
            return True
        with self._mutex:
            try:
                self._waiters.remove(turn)
            except ValueError:  # handed over just as the wait ran out: it is ours
                return True
            return False

    def release(self) -> None:
        """Hand the lock to the longest waiter, or free it."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # held all along: nobody can barge in
            else:
                self._held = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)
