"""deliver_sm the simulator owes its clients (receipts and MO), and the timers that release them.

Like a real SMSC, the simulator keeps what it has to deliver per *system_id*,
not per TCP session: a receipt that was sent but not acknowledged when the
connection dropped goes back to the queue and is sent on the next bind. This
is what lets a test check that the gateway loses no receipt across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smpp_gateway.simulator.records import SubmitRecord
    from smpp_gateway.simulator.session import SMSCSession

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

    def take_all(self) -> list[tuple[Callable[[Any], None], Any]]:
        """Remove every pending entry and return ``(callback, argument)`` in due order."""
        entries = [(callback, argument) for _, _, callback, argument in sorted(self._heap)]
        self.cancel_all()
        return entries

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
        self._receivers: dict[str, list[SMSCSession]] = {}
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

    def add_receiver(self, session: SMSCSession) -> None:
        self._receivers.setdefault(session.system_id, []).append(session)
        self.pump(session.system_id)

    def remove_receiver(self, session: SMSCSession) -> None:
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

    def take_all(self) -> list[Delivery]:
        """Remove and return every delivery waiting for a receiver, in queue order."""
        deliveries = [delivery for queue in self._ready.values() for delivery in queue]
        self._ready.clear()
        return deliveries

    def clear(self) -> None:
        self._ready.clear()


class OwedFile:
    """Receipts and MO still owed when the simulator stops, kept in a JSON file.

    A real SMSC keeps what it owes a system_id across its own restarts and sends
    it on the next bind; ``SimulatorConfig.owed_file`` makes the simulator do the
    same (``manage.py serve --simulator`` sets it under SMSAPI_DATA_DIR). Only
    the PDU octets and the owner are kept: the submit log is not, so a query_sm
    for a message from before the restart answers "unknown id".
    """

    VERSION = 1

    def __init__(self, path: str):
        self.path = path

    def save(self, deliveries: list[Delivery]) -> int:
        """Write the deliveries (junk ones are not owed); returns how many were written."""
        owed = [
            {"kind": d.kind, "system_id": d.system_id, "pdu": d.pdu.hex()}
            for d in deliveries
            if d.kind in (RECEIPT, MO)
        ]
        if not owed:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            return 0
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"version": self.VERSION, "owed": owed}, file)
        os.replace(temporary, self.path)  # never a half-written file
        return len(owed)

    def load(self) -> list[Delivery]:
        """Read and remove the file; a missing or unreadable file owes nothing."""
        try:
            with open(self.path, encoding="utf-8") as file:
                data = json.load(file)
            owed = [
                Delivery(str(item["kind"]), str(item["system_id"]), bytes.fromhex(item["pdu"]))
                for item in data["owed"]
                if item["kind"] in (RECEIPT, MO)
            ]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("owed deliveries file %s unreadable, ignored: %s", self.path, error)
            return []
        os.remove(self.path)  # they are in memory now: saved again at the next stop
        return owed
