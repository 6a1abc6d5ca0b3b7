"""Django's SQLite backend, with the writers of one process queued in order.

SQLite has one writer at a time per database file. A connection that finds
the write lock taken polls for it, sleeping 1, 2, 5 ... then 100 ms between
tries (SQLite's busy handler), so a writer that has waited a while keeps
sleeping past the moment the lock frees, and one that writes back to back
(the worker, the intake) can take the lock again and again ahead of it. Under
load a batch waited past the busy timeout and was refused ("database is
locked"). Writers of the same process queue here instead (``WriterQueue``):
in arrival order, each woken the moment the one before commits. Other
processes still meet SQLite's own lock and its busy timeout.

The reach: Django has no public hook where a transaction starts and ends, so
``DatabaseWrapper`` overrides four private methods of Django 5.2's backend
(``_start_transaction_under_autocommit``, where it sends ``BEGIN``, and
``_commit``, ``_rollback``, ``_close``, the three ways out).
tests/test_upstream_django_sqlite_writer.py fails when they change. On another
Django the backend is Django's own (a warning says so): writers then meet
SQLite's busy handler only.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

from upstream import written_for

DJANGO_VERSIONS = ("5.2",)
WHAT = "the SQLite writers' queue (upstream.django_sqlite_writer)"


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


_queues: dict[str, WriterQueue] = {}
_queues_lock = threading.Lock()


def writer_queue(name: str) -> WriterQueue:
    """The queue of the database file ``name`` (one per file and process)."""
    with _queues_lock:
        queue = _queues.get(name)
        if queue is None:
            queue = _queues[name] = WriterQueue()
        return queue


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's SQLite ``DatabaseWrapper``; ``BEGIN`` first waits for this
    process's turn to write, which passes on at ``COMMIT``, ``ROLLBACK`` or close."""

    _queue_turn: WriterQueue | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queues_writers = written_for("django", *DJANGO_VERSIONS, what=WHAT)

    def _start_transaction_under_autocommit(self) -> None:
        if not self.queues_writers:
            return super()._start_transaction_under_autocommit()
        queue = writer_queue(str(self.settings_dict["NAME"]))
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        if not queue.acquire(timeout):
            raise OperationalError(
                f"database is locked: no turn to write within {timeout:g} s "
                f"({queue.waiting} writers waiting in this process)"
            )
        self._queue_turn = queue
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._end_turn()
            raise

    def _end_turn(self) -> None:
        queue, self._queue_turn = self._queue_turn, None
        if queue is not None:
            queue.release()

    @contextlib.contextmanager
    def _ending_turn(self) -> Iterator[None]:
        """Pass the turn on once the block is done, whether it failed or not."""
        try:
            yield
        finally:
            self._end_turn()

    # Django's three ways out of a transaction.
    def _commit(self) -> None:
        with self._ending_turn():
            return super()._commit()

    def _rollback(self) -> None:
        with self._ending_turn():
            return super()._rollback()

    def _close(self) -> None:
        with self._ending_turn():
            return super()._close()
