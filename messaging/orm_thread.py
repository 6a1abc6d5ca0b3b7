"""Running the ORM off the event loop: the one way, with one connection policy.

Django's ORM is synchronous and its connections belong to the thread that
opened them. Everything asynchronous here (views, streams, the webhook sender,
the SMPP worker, the readiness probe) hands its store work to a thread through
this module, and the connection that work opens is handled by one rule:

    A connection lives as long as the work that owns its thread, and no longer;
    a call that raised never leaves its connection to the next one.

- ``in_db_thread``: a call on a *shared* thread (asgiref's pool, or a pool the
  caller passes). The call owns the thread only while it runs, so it starts and
  ends as a Django request does (``close_old_connections``): with
  ``CONN_MAX_AGE = 0`` the connection goes back (to the pool, or closed) when
  the call ends, and a dozen pool threads do not each hold one for ever.
  ``connection_per_call`` is the same rule for sync code that something else
  runs on a shared thread (the API handler's sync views).
- ``DatabaseThread``: a thread of *one long-lived job* (the worker's writes and
  claims, the webhook sender's rounds, the API's intake). The job owns the thread, so the
  connection stays for the job's life (a connection per call would cost the
  worker's hot path a connect, or a pool round trip, per batch) and goes at
  ``close()``; after a call that raised it is closed at once (it may be broken).
  ``per_call_connection=True`` gives such a thread the shared threads' rule, for
  a job that must prove it can get a connection each time (the readiness probe).

There is no switch for the test suite: tests that need the store work to see
their data commit it (``django_db(transaction=True)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")


def _call_per_call_connection(func: Callable[..., R], /, *args: object, **kwargs: object) -> R:
    """``func`` started and ended as a request is: an old or broken connection is
    dropped before it, and the connection goes back when it ends."""
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


def _call_kept_connection(func: Callable[..., R], /, *args: object) -> R:
    """``func`` on a thread that keeps its connection: closed only when ``func`` raised."""
    try:
        return func(*args)
    except Exception:
        connections.close_all()  # this thread's: a broken one must not poison the next call
        raise


def connection_per_call(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` under the shared threads' rule, for sync ORM code that something
    else runs on a shared thread (the API handler's sync views, ``in_db_thread``)."""

    @functools.wraps(func)
    def with_fresh_connection(*args: P.args, **kwargs: P.kwargs) -> R:
        return _call_per_call_connection(func, *args, **kwargs)

    return with_fresh_connection


def in_db_thread(
    func: Callable[P, R], executor: Executor | None = None
) -> Callable[P, Awaitable[R]]:
    """``func`` (synchronous ORM code) as a coroutine run on a shared thread.

    Not thread-sensitive, so concurrent streams and calls do not queue behind one
    another; ``executor`` gives a kind of call threads of its own (the JSON-RPC
    queries, which may wait seconds for the SMSC). The connection is closed in
    the same context that opened it: ``channels.db.database_sync_to_async``
    closes it outside that context, which with asgiref 3.13 can miss it and
    leave PostgreSQL sessions open.
    """
    return sync_to_async(connection_per_call(func), thread_sensitive=False, executor=executor)


class DatabaseThread:
    """One thread for one long-lived job's store work, in the order it is handed over.

    One thread, so the job's writes never race each other and hold one
    connection at most (see the module doc for how long it lives).
    """

    def __init__(self, name: str, *, per_call_connection: bool = False) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._call = _call_per_call_connection if per_call_connection else _call_kept_connection

    def submit(self, func: Callable[..., R], /, *args: object) -> Future[R]:
        """Start ``func(*args)`` on the thread; its future (for a caller that polls)."""
        return self._executor.submit(self._call, func, *args)

    async def run(self, func: Callable[..., R], /, *args: object) -> R:
        """``func(*args)`` on the thread, awaited.

        Shielded: a caller cancelled (the link goes, the process stops) stops
        waiting, but what it handed over still runs. Unshielded, the SMPP
        worker's write of results queued behind other work was dropped, and its
        parts, though the SMSC had accepted them, went out again once their
        lease ran out (fault suite).
        """
        return await asyncio.shield(asyncio.wrap_future(self.submit(func, *args)))

    def close(self) -> None:
        """Hand the connection back (to the pool, or closed) and end the thread.

        Blocks until the work already handed over is done (``aclose`` waits
        without blocking the event loop).
        """
        self._executor.submit(connections.close_all)
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """``close`` from the event loop: the work handed over is awaited, not blocked on."""
        with contextlib.suppress(Exception):
            await self.run(connections.close_all)
        self._executor.shutdown(wait=True)  # nothing is left to wait for
