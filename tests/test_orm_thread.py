"""The one connection policy of messaging.orm_thread: per call on shared threads,
for the job's life on a DatabaseThread, never left behind by a call that raised."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connections

from messaging.orm_thread import DatabaseThread, in_db_thread

pytestmark = pytest.mark.django_db(transaction=True)


def _wrapper():
    """This thread's database wrapper, connected (its ``connection`` is checked after)."""
    wrapper = connections["default"]
    wrapper.ensure_connection()
    return wrapper


def _fail():
    connections["default"].ensure_connection()
    raise RuntimeError("a bug in the job")


def test_a_database_thread_keeps_its_connection_until_a_call_raises_or_it_closes():
    thread = DatabaseThread("test-db")
    try:
        wrapper = thread.submit(_wrapper).result()
        first = wrapper.connection
        assert first is not None
        assert thread.submit(_wrapper).result().connection is first  # kept between calls
        with pytest.raises(RuntimeError):
            thread.submit(_fail).result()
        assert wrapper.connection is None  # a call that raised leaves no connection behind
        assert thread.submit(_wrapper).result().connection is not None
    finally:
        thread.close()
    assert wrapper.connection is None  # handed back at close


def test_a_per_call_thread_hands_its_connection_back_after_each_call():
    thread = DatabaseThread("test-readiness", per_call_connection=True)
    try:
        wrapper = thread.submit(_wrapper).result()
        assert wrapper.connection is None
    finally:
        thread.close()


async def test_in_db_thread_hands_the_connection_back_after_the_call():
    wrapper = await in_db_thread(_wrapper)()
    assert wrapper.connection is None


async def test_work_handed_to_a_database_thread_runs_on_when_its_caller_is_cancelled():
    thread = DatabaseThread("test-db")
    release, done = threading.Event(), threading.Event()

    def slow_write():
        release.wait(5)
        done.set()

    try:
        waiting = asyncio.create_task(thread.run(slow_write))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        await thread.aclose()
        assert done.is_set()
    finally:
        release.set()
