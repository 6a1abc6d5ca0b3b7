"""Writes of one event-loop turn leave together: one ``transport.write``, one syscall.

A session answers a read full of PDUs with as many PDUs; written one by one,
each would cost a send() of its own. ``CoalescedWriter.write`` only queues the
bytes; the flush, scheduled once per turn of the loop, joins them. The client
session and the simulator's SMSC session both write through one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class CoalescedWriter:
    """Bytes for one transport, sent at the end of the current loop turn.

    ``buffer_limit``: once more than this many octets wait in the transport's
    buffer after a flush (the peer does not read), ``on_overflow(waiting)`` is
    called; the owner decides what to do (the client session drops the link).
    ``last_flush`` is the monotonic time of the last flush that wrote something.
    """

    __slots__ = (
        "transport",
        "_out",
        "_scheduled",
        "buffer_limit",
        "on_overflow",
        "last_flush",
    )

    def __init__(
        self,
        transport: asyncio.WriteTransport | None = None,
        buffer_limit: int | None = None,
        on_overflow: Callable[[int], None] | None = None,
    ):
        self.transport = transport
        self._out: list[bytes] = []
        self._scheduled = False
        self.buffer_limit = buffer_limit
        self.on_overflow = on_overflow
        self.last_flush = time.monotonic()

    def write(self, data: bytes) -> None:
        """Queue ``data``; it leaves with everything else written in this loop turn."""
        self._out.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued now (the scheduled flush, or before closing)."""
        self._scheduled = False
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        self.last_flush = time.monotonic()
        limit = self.buffer_limit
        if limit is not None and self.on_overflow is not None:
            waiting = transport.get_write_buffer_size()
            if waiting > limit:
                self.on_overflow(waiting)

    def discard(self) -> None:
        """Drop what is queued (the connection is gone)."""
        self._out.clear()

    def waiting(self) -> int:
        """Octets in the transport's buffer, not yet taken by the kernel."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0
