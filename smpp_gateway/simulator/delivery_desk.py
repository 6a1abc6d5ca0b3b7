"""The deliver_sm side of an SMSC session: receipts and MO sent, their answers awaited.

``DeliveryDesk`` is the half of ``SMSCSession`` that sends what the ``Outbox``
holds for its system_id, at most ``deliver_window`` unanswered, and reads the
client's deliver_sm_resp: accepted, to be sent again later ("not now"
statuses), or refused for good. A mixin like ``SubmitDesk``: it shares the
session's state (bound to receive, closing, the send buffer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from smpp.command_status import ESME_RMSGQFUL, ESME_RSYSERR, ESME_RTHROTTLED, ESME_RX_T_APPN
from smpp_gateway.simulator.deliveries import RECEIPT, Delivery

if TYPE_CHECKING:
    from smpp_gateway.simulator.server import SMSCSimulator

# deliver_sm_resp statuses after which a deliver_sm is sent again (the client cannot
# take it now); any other error refuses it for good, and it is dropped.
RETRY_STATUSES = frozenset({ESME_RX_T_APPN, ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR})


class DeliveryDesk:
    """deliver_sm out and deliver_sm_resp in, for ``SMSCSession`` (see the module docstring)."""

    sim: SMSCSimulator
    loop: asyncio.AbstractEventLoop
    system_id: str
    can_receive: bool
    closing: bool
    # deliver_sm sent and not answered: sequence -> (delivery, loop time sent);
    # insertion order is sending order, which the timeout sweep relies on.
    inflight: dict[int, tuple[Delivery, float]]
    send: Callable[[bytes], None]  # the session's CoalescedWriter.write
    next_sequence: Callable[[], int]  # the session's SequenceNumbers.next

    def has_delivery_room(self) -> bool:
        window = self.sim.config.deliver_window
        return self.can_receive and not self.closing and (not window or len(self.inflight) < window)

    def send_delivery(self, delivery: Delivery) -> None:
        sequence = self.next_sequence()
        self.inflight[sequence] = (delivery, self.loop.time())
        delivery.attempts += 1
        if delivery.kind == RECEIPT:
            self.sim.counters.receipts_sent += 1
            if delivery.record is not None:
                delivery.record.receipt = "sent"
        else:
            self.sim.counters.mo_sent += 1
        self.send(delivery.with_sequence(sequence))

    def _on_deliver_sm_resp(self, sequence: int, status: int) -> None:
        entry = self.inflight.pop(sequence, None)
        sim = self.sim
        if entry is None:
            sim.counters.late_responses += 1
            return
        delivery = entry[0]
        if status == 0:
            sim.delivered(delivery)
        elif status in RETRY_STATUSES:
            sim.counters.deliver_errors += 1
            sim.outbox.retry(delivery, sim.config.redeliver_delay, self.loop.time())
        else:
            sim.counters.deliver_errors += 1
            sim.refused(delivery, status)
        sim.outbox.pump(self.system_id)

    def expire_deliveries(self, now: float, timeout: float) -> list[Delivery]:
        """Take back the deliver_sm that waited longer than ``timeout`` for an answer."""
        expired = []
        for sequence, (delivery, sent_at) in self.inflight.items():
            if sent_at + timeout > now:
                break  # sent in order: the rest are younger
            expired.append((sequence, delivery))
        for sequence, _ in expired:
            del self.inflight[sequence]
        return [delivery for _, delivery in expired]

    def take_inflight(self) -> list[Delivery]:
        """All unanswered deliveries, oldest first, for a lost session's queue."""
        deliveries = [delivery for delivery, _ in self.inflight.values()]
        self.inflight.clear()
        return deliveries
