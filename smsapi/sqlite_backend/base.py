"""Django's SQLite backend, with the writers of one process queued in order.

Identical to ``django.db.backends.sqlite3`` but for when a transaction starts
and ends: ``BEGIN`` (``IMMEDIATE`` in this project's settings, which takes
SQLite's write lock) first waits for its turn in a ``WriterQueue`` shared by
every connection of this process to the same database file, and the turn
passes on at ``COMMIT``, ``ROLLBACK`` or close. Other processes still meet
SQLite's own lock and its busy timeout.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

from smsapi.sqlite_backend.writer_queue import WriterQueue

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
    _queue_turn: WriterQueue | None = None

    def _start_transaction_under_autocommit(self) -> None:
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
