"""What the SMSC sends us (deliver_sm, data_sm): receipts and incoming messages, taken in.

Each is read (``smpp_gateway.deliver``) and queued for the next write; its
deliver_sm_resp goes out only after that write commits (``ResultWriter``).
One that cannot be read is refused for good at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from messaging.store import ReceiptIn
from smpp_gateway.deliver import read_deliver
from smpp_gateway.worker.results import RECEIVER_PERMANENT

if TYPE_CHECKING:
    from smpp_gateway.worker.link import Link
    from smpp_gateway.worker.receipt_wait import ReceiptWait
    from smpp_gateway.worker.results import Pending

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker

# Fields of a deliver_sm worth logging when it cannot be read.
_SEEN = ("source_addr", "destination_addr", "esm_class", "data_coding", "short_message")


class IncomingDeliveries:
    """The session's ``on_deliver``."""

    def __init__(
        self, link: Link, pending: Pending, receipt_wait: ReceiptWait, id_style: str
    ) -> None:
        self.link = link
        self.pending = pending
        self.receipt_wait = receipt_wait
        self.id_style = id_style  # how this SMSC writes its message ids

    def on_deliver(self, pdu: Any, sequence: int) -> None:
        """Queue what ``pdu`` carries for the next write (or refuse it for good)."""
        session = self.link.session
        try:
            item = read_deliver(pdu, self.id_style)
        except Exception as exc:
            # The same bytes would fail the same way: refused for good, not "retry".
            logger.error(
                "deliver_sm %d refused with ESME_RX_P_APPN: %s (%r)",
                sequence,
                exc,
                pdu if isinstance(pdu, bytes) else {n: getattr(pdu, n, None) for n in _SEEN},
                exc_info=None if isinstance(exc, ValueError) else exc,
            )
            if session is not None:
                session.respond_deliver(sequence, RECEIVER_PERMANENT)
            return
        if isinstance(item, ReceiptIn):
            self.receipt_wait.receipt_came(item)
            self.pending.receipts.append((item, sequence, session))
        else:
            self.pending.fragments.append((item, sequence, session))
        self.pending.wanted.set()
