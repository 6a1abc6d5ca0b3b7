"""deliver_sm the simulator owes its clients (receipts and MO), and the timers that release them.

Like a real SMSC, the simulator keeps what it has to deliver per *system_id*,
not per TCP session: a receipt that was sent but not acknowledged when the
connection dropped goes back to the queue and is sent on the next bind. This
is what lets a test check that the gateway loses no receipt across restarts.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import SubmitRecord
    from .session import SMPPSession

log = logging.getLogger("smpp_gateway.simulator")

RECEIPT = "receipt"
MO = "mo"
JUNK = "junk"  # a deliver_sm with a body cut short (truncated_deliver_rate)


@dataclass(slots=True, eq=False)
class Delivery:
    """One deliver_sm to send until a client acknowledges it with status 0.

    ``pdu`` is encoded once with sequence number 0; each attempt patches in the
    sequence of the session it goes out on.
    """

    kind: str  # RECEIPT or MO
    system_id: str
    pdu: bytes
    record: SubmitRecord | None = None
    attempts: int = 0

    def with_sequence(self, sequence: int) -> bytes:
        return self.pdu[:12] + sequence.to_bytes(4, "big") + self.pdu[16:]


class Timers:
    """One asyncio timer for many deadlines: a heap, cheaper than a task per receipt."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._handle_due = float("inf")

    def call_at(self, due: float, callback: Callable[[Any], None], argument: Any) -> None:
        """Run ``callback(argument)`` at loop time ``due`` (in due order, FIFO on ties)."""
        heapq.heappush(self._heap, (due, next(self._order), callback, argument))
        if due < self._handle_due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_due = due
        self._handle = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._handle_due = float("inf")
        heap = self._heap
        # Run what is due now, and what falls due within a millisecond (clock resolution).
        now = self._loop.time() + 0.001
        while heap and heap[0][0] <= now:
            _, _, callback, argument = heapq.heappop(heap)
            try:
                callback(argument)
            except Exception:  # one bad entry must not stall every later receipt
                log.exception("simulator timer %r failed", callback)
        if heap:
            self._arm(heap[0][0])

    def __len__(self) -> int:
        return len(self._heap)

    def cancel_all(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._handle_due = float("inf")
        self._heap.clear()


class Outbox:
    """Deliveries ready to go, per system_id, and the sessions that can take them."""

    def __init__(self, timers: Timers):
        self._timers = timers
        self._ready: dict[str, deque[Delivery]] = {}
        self._receivers: dict[str, list[SMPPSession]] = {}
        self._turn = itertools.count()

    def put(self, delivery: Delivery) -> None:
        """Queue a delivery behind the others of its system_id and send what can be sent."""
        self._ready.setdefault(delivery.system_id, deque()).append(delivery)
        self.pump(delivery.system_id)

    def put_back(self, system_id: str, deliveries: list[Delivery]) -> None:
        """Return unacknowledged deliveries of a lost session to the head of the queue."""
        if deliveries:
            self._ready.setdefault(system_id, deque()).extendleft(reversed(deliveries))
            self.pump(system_id)

    def retry(self, delivery: Delivery, delay: float, now: float) -> None:
        """Send again after ``delay`` (the client refused it or did not answer)."""
        self._timers.call_at(now + delay, self.put, delivery)

    def add_receiver(self, session: SMPPSession) -> None:
        self._receivers.setdefault(session.system_id, []).append(session)
        self.pump(session.system_id)

    def remove_receiver(self, session: SMPPSession) -> None:
        sessions = self._receivers.get(session.system_id, [])
        if session in sessions:
            sessions.remove(session)

    def pump(self, system_id: str) -> None:
        """Hand ready deliveries to the system_id's receivers, round robin, within their windows."""
        queue = self._ready.get(system_id)
        sessions = self._receivers.get(system_id)
        if not queue or not sessions:
            return
        count = len(sessions)
        start = next(self._turn)
        while queue:
            sent = False
            for offset in range(count):
                session = sessions[(start + offset) % count]
                if session.has_delivery_room():
                    session.send_delivery(queue.popleft())
                    sent = True
                    if not queue:
                        return
            if not sent:
                return  # every window is full: deliver_sm_resp will pump again

    def pending(self, system_id: str | None = None) -> int:
        """Deliveries waiting for a receiver (not those already sent and unanswered)."""
        if system_id is not None:
            return len(self._ready.get(system_id, ()))
        return sum(len(queue) for queue in self._ready.values())

    def clear(self) -> None:
        self._ready.clear()
