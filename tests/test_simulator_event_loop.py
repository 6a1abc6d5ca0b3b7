"""The simulator's event loop: epoll for readiness, select() for the timeout.

Nothing here asserts on how precise a timer is (the window benchmark measures
that); the tests check what the selector must never get wrong: it reports what
is ready, waits while nothing is, and hands select() the timeout unrounded.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import socket
import threading
import time

import pytest

from smpp_gateway.simulator.event_loop import MicrosecondEpollSelector, new_event_loop


@pytest.fixture
def selector_and_pair():
    selector = MicrosecondEpollSelector()
    ours, theirs = socket.socketpair()
    selector.register(ours, selectors.EVENT_READ, "ours")
    yield selector, ours, theirs
    selector.close()
    ours.close()
    theirs.close()


@pytest.mark.parametrize("timeout", [None, 0, 2.0])
def test_ready_socket_is_reported_whatever_the_timeout(selector_and_pair, timeout):
    selector, ours, theirs = selector_and_pair
    theirs.send(b"x")
    ready = selector.select(timeout)
    assert [(key.data, events) for key, events in ready] == [("ours", selectors.EVENT_READ)]


def test_nothing_ready_waits_at_least_the_timeout(selector_and_pair):
    selector, _, _ = selector_and_pair
    started = time.monotonic()
    assert selector.select(0.02) == []
    assert time.monotonic() - started >= 0.02


def test_a_wait_ends_when_a_socket_becomes_ready(selector_and_pair):
    selector, _, theirs = selector_and_pair
    threading.Timer(0.05, theirs.send, args=(b"x",)).start()
    ready = selector.select(30.0)  # returns on the write, long before the timeout
    assert [key.data for key, _ in ready] == ["ours"]


def test_the_timeout_reaches_select_unrounded(selector_and_pair, monkeypatch):
    selector, _, _ = selector_and_pair
    waits = []
    real_select = select.select

    def recording_select(rlist, wlist, xlist, timeout=None):
        waits.append((list(rlist), timeout))
        return real_select(rlist, wlist, xlist, timeout)

    monkeypatch.setattr(select, "select", recording_select)
    selector.select(0.0003)
    assert waits == [([selector.fileno()], 0.0003)]


def test_loop_runs_io_and_timers():
    loop = new_event_loop()
    assert isinstance(loop._selector, MicrosecondEpollSelector)  # noqa: SLF001

    async def echo_and_sleep() -> tuple[bytes, float, float]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        line = await reader.readline()
        writer.close()
        server.close()
        due = loop.time() + 0.0105
        fired = loop.create_future()
        loop.call_at(due, lambda: fired.set_result(loop.time()))
        return line, due, await fired

    try:
        line, due, fired_at = loop.run_until_complete(echo_and_sleep())
    finally:
        loop.close()
    assert line == b"ping\n"
    assert fired_at >= due  # a response_delay is a minimum: never early


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()
