"""The simulator's event loop: epoll, with timeouts to the microsecond.

asyncio's epoll selector rounds every timeout up to a whole millisecond (the
resolution of ``epoll_wait``), so a timer wakes the loop on average half a
millisecond late, more under load. For a 50 ms ``response_delay`` that is a
1-3 % slower SMSC than the one configured, and the window benchmark measures
exactly that. ``select()`` takes its timeout in microseconds and an epoll
descriptor is itself pollable, so the loop waits on the epoll descriptor with
``select()`` and then collects the ready events from epoll without waiting:
timers fire on time (never early: asyncio runs a timer only once it is due),
and the simulator still serves any number of connections.
"""

from __future__ import annotations

import asyncio
import select
import selectors


class MicrosecondEpollSelector(selectors.EpollSelector):
    """An ``EpollSelector`` whose waits end within microseconds of the timeout."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            select.select([self.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A loop for the simulator, whose response and receipt timers keep time."""
    return asyncio.SelectorEventLoop(MicrosecondEpollSelector())
