"""The submit side of an SMSC session: submit_sm and query_sm, with the faults that touch them.

``SubmitDesk`` is the half of ``SMSCSession`` that answers the client's
submits: what it refuses before reading the PDU (not bound to submit, a full
queue, a window or a rate exceeded), what it refuses after (a rejected
address, an injected error) and, for an accepted one, its message id and the
receipt to come. It is a mixin, not an object of its own: it shares the
session's state (bound or not, outstanding submits, the send buffer) and keeps
the per-submit path free of one more hop.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smpp.command_status import (
    ESME_RINVBNDSTS,
    ESME_RINVDSTADR,
    ESME_RINVMSGID,
    ESME_RINVSRCADR,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RTHROTTLED,
)
from smpp.constants import ADDRESS_MAX, QUERY_SM_RESP, SUBMIT_SM_RESP
from smpp.flow import TokenBucket
from smpp.pdu import as_text, encode_pdu
from smpp_gateway.simulator.wire import header_only, parse_submit_sm, submit_sm_resp

if TYPE_CHECKING:
    from smpp_gateway.simulator.server import SMSCSimulator

UNKNOWN_COMMAND = 0x000000FF  # what malformed_rate sends: no such command in SMPP


class SubmitDesk:
    """submit_sm and query_sm for ``SMSCSession`` (see the module docstring)."""

    sim: SMSCSimulator
    loop: asyncio.AbstractEventLoop
    can_submit: bool
    closing: bool
    outstanding: int
    _queue_full_until: float
    _rate: TokenBucket
    send: Callable[[bytes], None]  # the session's CoalescedWriter.write
    next_sequence: Callable[[], int]  # the session's SequenceNumbers.next
    _decode: Callable[[int, bytes], Any]  # smpplib's reading, or None and a generic_nack

    def _start_rate(self) -> None:
        """At the bind: a full bucket of ``max_rate`` (one second's worth at most)."""
        rate = self.sim.config.max_rate
        self._rate = TokenBucket(rate or None, burst=max(1.0, rate), clock=self.loop.time)

    def _on_submit(self, sequence: int, data: bytes) -> bool:
        """Answer one submit_sm; True when its response went on a timer (response_delay)."""
        sim = self.sim
        now = self.loop.time()
        sim.counters.submits_received += 1
        sim.count_submit_rate(now)
        config = sim.config
        # Checked here first: the usual submit passes them all without a call.
        limited = config.max_window or config.max_rate
        if limited or not self.can_submit or now < self._queue_full_until:
            status = self._refused_unread(now)
            if status:
                self.send(header_only(SUBMIT_SM_RESP, status, sequence))
                return False
        try:
            pdu = parse_submit_sm(data)
        except (ValueError, IndexError, struct.error):
            pdu = self._decode(sequence, data)  # odd PDU: let smpplib have its say
            if pdu is None:
                return False
        return self._answer_read(sequence, pdu, now)

    def _refused_unread(self, now: float) -> int:
        """The status refusing a submit before its body is read (0: none): not bound
        to submit, the queue full (queue_full_for), the window or the rate exceeded."""
        config = self.sim.config
        counters = self.sim.counters
        if not self.can_submit:
            return ESME_RINVBNDSTS
        if now < self._queue_full_until:
            counters.queue_full += 1
            return ESME_RMSGQFUL
        if config.max_window and self.outstanding > config.max_window:
            counters.window_violations += 1
            return ESME_RTHROTTLED
        if config.max_rate and not self._take_token(config.max_rate):
            counters.throttled += 1
            return ESME_RTHROTTLED
        return ESME_ROK

    def _take_token(self, rate: float) -> bool:
        """Token bucket: ``rate`` submits per second, bursts up to one second's worth.

        The rate is the config's of the moment (``set_config`` changes it at run
        time): a new one applies from the bucket's last refill, as it always did.
        """
        bucket = self._rate
        if bucket.rate != rate:
            bucket.rate = rate
            bucket.burst = max(1.0, rate)
        return bucket.take(1) == 1

    def _answer_read(self, sequence: int, pdu: Any, now: float) -> bool:
        """Refuse the read submit (an injected error, a rejected or oversize address) or
        accept it: record it, plan its receipt and answer it, with the faults that apply."""
        sim = self.sim
        config = sim.config
        counters = sim.counters
        chance = sim.random.random
        if config.error_rate and chance() < config.error_rate:
            counters.rejected_fault += 1
            return self._respond(
                sequence, header_only(SUBMIT_SM_RESP, config.error_status, sequence)
            )
        destination = as_text(pdu.destination_addr)
        if config.rejects(destination) or len(destination) > ADDRESS_MAX:
            counters.rejected += 1
            return self._respond(sequence, header_only(SUBMIT_SM_RESP, ESME_RINVDSTADR, sequence))
        if len(pdu.source_addr or b"") > ADDRESS_MAX:
            counters.rejected += 1
            return self._respond(sequence, header_only(SUBMIT_SM_RESP, ESME_RINVSRCADR, sequence))
        record = sim.accept_submit(self, pdu, destination)
        if config.malformed_rate and chance() < config.malformed_rate:
            counters.malformed_sent += 1
            self.send(header_only(UNKNOWN_COMMAND, 0, self.next_sequence()))
        response_at = now + config.response_delay
        if config.receipt_before_response:
            sim.settle(record)
        else:
            sim.settle_at(record, response_at + config.receipt_delay)
        if config.drop_response_rate and chance() < config.drop_response_rate:
            counters.responses_dropped += 1  # the client times it out: not outstanding here
            return False
        message_id = record.id_str.encode("ascii")
        if config.empty_id_rate and chance() < config.empty_id_rate:
            counters.empty_ids_sent += 1
            record.empty_id = True
            message_id = b""
        return self._respond(sequence, submit_sm_resp(sequence, message_id))

    def _respond(self, sequence: int, response: bytes) -> bool:
        """Send a submit_sm_resp now or, with response_delay, on its own timer (True)."""
        delay = self.sim.config.response_delay
        if delay <= 0:
            self.send(response)
            return False
        self.loop.call_later(delay, self._send_delayed, response)
        return True

    def _send_delayed(self, response: bytes) -> None:
        self.outstanding -= 1
        if not self.closing:
            self.send(response)

    def _on_query(self, sequence: int, data: bytes) -> None:
        if not self.can_submit:
            self.send(header_only(QUERY_SM_RESP, ESME_RINVBNDSTS, sequence))
            return
        pdu = self._decode(sequence, data)
        if pdu is None:
            return
        self.sim.counters.queries += 1
        message_id = as_text(pdu.message_id)
        record = self.sim.find_submit(message_id)
        if record is None:
            self.send(header_only(QUERY_SM_RESP, ESME_RINVMSGID, sequence))
            return
        self.send(
            encode_pdu(
                "query_sm_resp",
                sequence,
                message_id=message_id,
                final_date=self.sim.final_date(record),
                message_state=record.message_state,
                error_code=record.error_code,
            )
        )
