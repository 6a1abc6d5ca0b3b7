"""SQLite's writers of one process take turns in arrival order
(upstream/django_sqlite_writer.py)."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection, transaction

from tests.conftest import wait_until
from upstream.django_sqlite_writer import WriterQueue, writer_queue

# --- the queue ----------------------------------------------------------------------------


def test_the_lock_goes_to_its_waiters_in_the_order_they_came():
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    order: list[int] = []

    def writer(number: int) -> None:
        assert queue.acquire(timeout=5)
        order.append(number)
        queue.release()

    threads = []
    for number in range(5):
        threads.append(threading.Thread(target=writer, args=(number,)))
        threads[-1].start()
        wait_until(lambda n=number: queue.waiting == n + 1, timeout=5)
    queue.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_a_release_hands_the_lock_over_so_the_releaser_cannot_take_it_back_first():
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    got_it = threading.Event()

    def waiter() -> None:
        if queue.acquire(timeout=5):
            got_it.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: queue.waiting == 1, timeout=5)
    queue.release()
    assert not queue.acquire(timeout=0.05)  # the waiter's turn, not the releaser's again
    thread.join(5)
    assert got_it.is_set()
    queue.release()
    assert queue.acquire(timeout=0)


def test_a_waiter_whose_time_runs_out_leaves_the_queue():
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    assert not queue.acquire(timeout=0.05)
    assert queue.waiting == 0
    queue.release()  # nobody to hand over to: free
    assert queue.acquire(timeout=0)


# --- Django's connections on the SQLite store -------------------------------------------


sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the queue is the SQLite backend's"
)


def _in_thread(target, *args) -> threading.Thread:
    def run() -> None:
        try:
            target(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


class _Holder:
    """A thread inside a write transaction until ``end()``; ``how`` it ends."""

    def __init__(self, how: str = "commit"):
        self.inside = threading.Event()
        self._end = threading.Event()
        self.thread = _in_thread(self._run, how)
        assert self.inside.wait(10)

    def _run(self, how: str) -> None:
        try:
            with transaction.atomic():
                self.inside.set()
                self._end.wait(10)
                if how == "rollback":
                    raise RuntimeError("rolled back")
                if how == "close":
                    connection.close()
        except RuntimeError:
            pass

    def end(self) -> None:
        self._end.set()
        self.thread.join(10)


def _write_turn(order: list[str], name: str) -> None:
    with transaction.atomic():
        order.append(name)


def _queue() -> WriterQueue:
    return writer_queue(str(connection.settings_dict["NAME"]))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_writers_of_the_store_enter_in_the_order_they_asked():
    """SQLite's own busy handler polls with growing sleeps: a writer that has
    waited long sleeps 100 ms between tries, and one that just came retries
    every few ms and usually wins. Here the first to ask enters first."""
    holder = _Holder()
    order: list[str] = []
    first = _in_thread(_write_turn, order, "first")
    wait_until(lambda: _queue().waiting == 1, timeout=5)
    threading.Event().wait(0.4)  # long enough for SQLite's polls to be 100 ms apart
    second = _in_thread(_write_turn, order, "second")
    wait_until(lambda: _queue().waiting == 2, timeout=5)
    holder.end()
    first.join(10)
    second.join(10)
    assert order == ["first", "second"]


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["rollback", "close"])
def test_a_rollback_or_a_closed_connection_passes_the_turn_on(how):
    holder = _Holder(how)
    order: list[str] = []
    waiter = _in_thread(_write_turn, order, "waiter")
    wait_until(lambda: _queue().waiting == 1, timeout=5)
    holder.end()
    waiter.join(10)
    assert order == ["waiter"]
    assert _queue().acquire(timeout=1)  # and it is free again
    _queue().release()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_writer_whose_turn_does_not_come_gets_a_clear_error_and_no_transaction():
    holder = _Holder()
    errors: list[Exception] = []
    left_in_transaction: list[bool] = []

    def impatient() -> None:
        connection.settings_dict = {
            **connection.settings_dict,
            "OPTIONS": {**connection.settings_dict["OPTIONS"], "timeout": 0.1},
        }
        try:
            with transaction.atomic():
                pass
        except OperationalError as exc:
            errors.append(exc)
        left_in_transaction.append(connection.in_atomic_block)

    _in_thread(impatient).join(10)
    holder.end()
    assert left_in_transaction == [False]  # checked here: a thread's assert fails nothing
    assert len(errors) == 1
    assert "database is locked" in str(errors[0])
    assert _queue().waiting == 0
    assert _queue().acquire(timeout=1)
    _queue().release()
