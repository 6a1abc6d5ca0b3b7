"""One SMPP connection to the simulator: the wire, the bind state and per-session faults.

An ``asyncio.Protocol`` rather than streams: the benchmark pushes thousands of
submits per second through one connection, so PDUs are cut out of the receive
buffer in a loop and all answers of one read go out in one ``write``. Only
bind, submit_sm and query_sm bodies are decoded; everything else is answered
from its 16-octet header. The frequent PDUs (submit_sm, its response, deliver_sm)
are read and built by ``wire``, checked against smpplib by the tests; the rest
goes through smpplib (``smpp.pdu``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import TYPE_CHECKING

from smpp.pdu import MAX_PDU_LENGTH, PDUFormatError, as_text, decode_pdu, encode_pdu
from smpp_gateway.simulator.deliveries import MO, RECEIPT, Delivery
from smpp_gateway.simulator.wire import (
    ADDRESS_MAX,
    HEADER,
    deliver_sm,
    header_only,
    parse_submit_sm,
    submit_sm_resp,
)

if TYPE_CHECKING:
    from smpp_gateway.simulator.server import SMSCSimulator

log = logging.getLogger("smpp_gateway.simulator")

RESPONSE = 0x80000000
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
QUERY_SM = 0x00000003
SUBMIT_SM = 0x00000004
DELIVER_SM_RESP = 0x80000005
DATA_SM_RESP = 0x80000103
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
UNKNOWN_COMMAND = 0x000000FF  # what malformed_rate sends: no such command in SMPP

ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58

# command_id -> (name, may submit, may receive deliver_sm)
BIND_KINDS: dict[int, tuple[str, bool, bool]] = {
    BIND_RECEIVER: ("bind_receiver", False, True),
    BIND_TRANSMITTER: ("bind_transmitter", True, False),
    BIND_TRANSCEIVER: ("bind_transceiver", True, True),
}
DEAD_LINK_ENQUIRES = 3  # our enquire_links left unanswered before we drop the link
# deliver_sm_resp statuses after which a deliver_sm is sent again (the client cannot
# take it now); any other error refuses it for good, and it is dropped.
RETRY_STATUSES = frozenset({0x64, 0x58, 0x14, 0x08})  # RX_T_APPN, THROTTLED, MSGQFUL, SYSERR
FLOOD_TICK = 0.005  # seconds between two volleys of a flood
FLOOD_BUFFER_MAX = 1024 * 1024  # octets the flood leaves in our own write buffer, at most
UNBIND_GRACE = 5.0  # seconds we wait for unbind_resp after sending unbind


class SMPPSession(asyncio.Protocol):
    """The SMSC side of one TCP connection."""

    def __init__(self, sim: SMSCSimulator, session_id: int):
        self.sim = sim
        self.id = session_id
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.system_id = ""
        self.bind_kind = ""  # "" until bound, then the bind command's name
        self.can_submit = False
        self.can_receive = False
        self.closing = False
        self.pdus_after_bind = 0
        # Submits received whose response has not been written yet: delayed ones, and
        # those answered in the read under way (written together at its end).
        self.outstanding = 0
        self._answered_now = 0  # of those, answered in the read under way
        self.flooding = False
        # deliver_sm sent and not answered: sequence -> (delivery, loop time sent);
        # insertion order is sending order, which the timeout sweep relies on.
        self.inflight: dict[int, tuple[Delivery, float]] = {}
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._sequence = 0
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}  # by purpose, one each
        self._unanswered_enquires = 0
        self._unbind_sequence: int | None = None
        self._queue_full_until = 0.0  # loop time (queue_full_for): every submit gets 0x14

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.sim.session_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._out.clear()
        self.sim.session_closed(self)
        log.info(
            "session %d (%s, %s) disconnected%s",
            self.id,
            self.system_id or "not bound",
            self.peer,
            f": {exc}" if exc else "",
        )

    def pause_writing(self) -> None:
        # The client does not read: stop reading its submits until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing and not self.flooding:
            self.transport.resume_reading()

    @property
    def bound(self) -> bool:
        return bool(self.bind_kind)

    def abort(self, reason: str, fault: bool = False) -> None:
        """Drop the TCP connection at once (what was written so far is flushed first)."""
        if self.closing or self.transport is None:
            return
        log.info("session %d (%s): closing the connection, %s", self.id, self.system_id, reason)
        if fault:
            self.sim.counters.fault_disconnects += 1
        self._flush()
        self.closing = True
        self.transport.abort()

    def _close_gracefully(self) -> None:
        self._flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _later(self, purpose: str, delay: float, callback, *args) -> None:  # noqa: ANN001
        """Run ``callback`` once after ``delay``; cancelled when the connection goes."""
        previous = self._timers.get(purpose)
        if previous is not None:
            previous.cancel()
        self._timers[purpose] = self.loop.call_later(delay, callback, *args)

    # -- output ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes for the socket; everything queued in one loop turn goes in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    # -- input -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        size = len(buffer)
        try:
            while size - offset >= 16 and not self.closing:
                length, command_id, status, sequence = HEADER.unpack_from(buffer, offset)
                if length < 16 or length > MAX_PDU_LENGTH:
                    # The stream is desynchronised: nothing after this can be trusted.
                    self._nack(sequence, ESME_RINVCMDLEN)
                    log.warning("session %d: impossible command_length %d", self.id, length)
                    self._close_gracefully()
                    return
                if size - offset < length:
                    break
                pdu = bytes(buffer[offset : offset + length])
                offset += length
                was_bound = self.bound
                self._dispatch(command_id, status, sequence, pdu)
                if was_bound:
                    self.pdus_after_bind += 1
                    config = self.sim.config
                    every = config.disconnect_every_pdus
                    if every and self.pdus_after_bind >= every:
                        self.abort(f"disconnect_every_pdus={every}", fault=True)
                    flood = config.flood_after_pdus
                    if flood and self.pdus_after_bind == flood and not self.flooding:
                        self._start_flood()
        finally:
            del buffer[:offset]
            self._flush()
            # What was answered in this read has left: no longer outstanding.
            self.outstanding -= self._answered_now
            self._answered_now = 0

    def _dispatch(self, command_id: int, status: int, sequence: int, pdu: bytes) -> None:
        if command_id == SUBMIT_SM:
            # The window the client keeps, as far as the SMSC can see it: counted for
            # every submit, so a check of it can fail in any scenario.
            self.outstanding += 1
            counters = self.sim.counters
            if self.outstanding > counters.max_outstanding_seen:
                counters.max_outstanding_seen = self.outstanding
            if not self._on_submit(sequence, pdu):
                self._answered_now += 1
        elif command_id in (DELIVER_SM_RESP, DATA_SM_RESP):
            self._on_deliver_sm_resp(sequence, status)
        elif command_id == ENQUIRE_LINK:
            self.sim.counters.enquire_links_received += 1
            self.send(header_only(ENQUIRE_LINK_RESP, 0, sequence))
        elif command_id == ENQUIRE_LINK_RESP:
            self._unanswered_enquires = 0
        elif command_id in BIND_KINDS:
            self._on_bind(command_id, sequence, pdu)
        elif command_id == QUERY_SM:
            self._on_query(sequence, pdu)
        elif command_id == UNBIND:
            self._on_unbind(sequence)
        elif command_id == UNBIND_RESP:
            if self._unbind_sequence is not None:
                log.info("session %d (%s): unbind answered", self.id, self.system_id)
                self._close_gracefully()
        elif command_id == GENERIC_NACK:
            self.sim.counters.generic_nacks_received += 1
            if sequence in self.inflight:  # a deliver_sm the client could not read
                self._on_deliver_sm_resp(sequence, status or ESME_RINVCMDID)
        elif command_id & RESPONSE:
            log.debug("session %d: ignoring unexpected 0x%08x", self.id, command_id)
        else:
            self._nack(sequence, ESME_RINVCMDID)

    def _nack(self, sequence: int, status: int) -> None:
        self.sim.counters.generic_nacks_sent += 1
        self.send(header_only(GENERIC_NACK, status, sequence))

    def _decode(self, sequence: int, pdu: bytes):  # noqa: ANN202
        try:
            return decode_pdu(pdu)
        except PDUFormatError as exc:
            log.warning("session %d: %s", self.id, exc)
            self._nack(sequence, ESME_RINVCMDLEN)
            return None

    # -- bind / unbind ---------------------------------------------------------------

    def _on_bind(self, command_id: int, sequence: int, data: bytes) -> None:
        name, can_submit, can_receive = BIND_KINDS[command_id]
        if self.sim.config.bind_close:  # as SMSCs answer bad credentials: no answer at all
            self.sim.counters.bind_failures += 1
            self.abort("bind_close: the bind is answered by closing the connection")
            return
        pdu = self._decode(sequence, data)
        if pdu is None:
            return
        system_id = as_text(pdu.system_id)
        password = as_text(pdu.password)
        status = ESME_RALYBND if self.bound else self.sim.check_bind(system_id, password)
        config = self.sim.config
        if status or not config.pdus_before_bind_resp:
            self.send(encode_pdu(name + "_resp", sequence, status, system_id=config.smsc_system_id))
        if status:
            self.sim.counters.bind_failures += 1
            log.info(
                "session %d (%s): %s as %r refused, status 0x%02x",
                self.id,
                self.peer,
                name,
                system_id,
                status,
            )
            return
        self.system_id = system_id
        if config.pdus_before_bind_resp:
            self._speak_before_bind_resp(sequence, name, can_submit, can_receive)
            return
        self._bound(name, can_submit, can_receive)

    def _speak_before_bind_resp(
        self, sequence: int, name: str, can_submit: bool, can_receive: bool
    ) -> None:
        """An enquire_link and an incoming message, then (a moment later) the bind_resp:
        a client must not take them for a refusal. The message is sent again later
        if the client asks (0x64), as any deliver_sm."""
        self.sim.counters.pre_bind_pdus_sent += 2
        self.send(header_only(ENQUIRE_LINK, 0, self.next_sequence()))
        self.sim.counters.mo_queued += 1
        pdu = deliver_sm(0, source_addr="4970000001", destination_addr="1", short_message=b"early")
        self.send_delivery(Delivery(MO, self.system_id, pdu))
        response = encode_pdu(name + "_resp", sequence, 0, system_id=self.sim.config.smsc_system_id)

        def answer_bind() -> None:
            if not self.closing:
                self.send(response)
                self._bound(name, can_submit, can_receive)

        self._later("bind_resp", 0.05, answer_bind)

    def _bound(self, name: str, can_submit: bool, can_receive: bool) -> None:
        config = self.sim.config
        self.bind_kind = name
        self.can_submit = can_submit
        self.can_receive = can_receive
        now = self.loop.time()
        self._tokens, self._tokens_at = max(1.0, config.max_rate), now
        if config.queue_full_for:  # a half-dead session: enquire_link answered, submits not
            forever = config.queue_full_for < 0
            self._queue_full_until = float("inf") if forever else now + config.queue_full_for
        self.sim.counters.binds += 1
        log.info("session %d (%s): %s as %r", self.id, self.peer, name, self.system_id)
        self.sim.session_bound(self)
        if config.disconnect_every_seconds:
            every = config.disconnect_every_seconds
            self._later("disconnect", every, self.abort, f"disconnect_every_seconds={every}", True)
        if config.enquire_link_interval:
            self._later("enquire_link", config.enquire_link_interval, self._enquire)

    def _on_unbind(self, sequence: int) -> None:
        if not self.bound:
            self.send(header_only(UNBIND_RESP, ESME_RINVBNDSTS, sequence))
            return
        self.sim.counters.unbinds_received += 1
        log.info("session %d (%s): unbind from the client", self.id, self.system_id)
        self.send(header_only(UNBIND_RESP, 0, sequence))
        self._stop_receiving()
        self._close_gracefully()

    def send_unbind(self) -> bool:
        """Ask the client to unbind (an SMSC going down); drop the link if it does not answer."""
        if not self.bound or self.closing or self._unbind_sequence is not None:
            return False
        self._unbind_sequence = self.next_sequence()
        self.sim.counters.unbinds_sent += 1
        log.info("session %d (%s): sending unbind", self.id, self.system_id)
        self._stop_receiving()
        self.send(header_only(UNBIND, 0, self._unbind_sequence))
        self._later("unbind", UNBIND_GRACE, self.abort, "no unbind_resp")
        return True

    def _stop_receiving(self) -> None:
        self.can_receive = False
        self.sim.outbox.remove_receiver(self)

    def _start_flood(self) -> None:
        """Stop reading the client, and flood it with enquire_link until it drops us."""
        self.flooding = True
        self.sim.counters.floods += 1
        log.info(
            "session %d (%s): flooding with enquire_link, not reading", self.id, self.system_id
        )
        if self.transport is not None:
            self.transport.pause_reading()
        self._flood()

    def _flood(self) -> None:
        if self.closing or self.transport is None:
            return
        # Our own buffer stays bounded: what the client does not take is not made.
        if self.transport.get_write_buffer_size() < FLOOD_BUFFER_MAX:
            volley = max(1, int(self.sim.config.flood_rate * FLOOD_TICK))
            self.sim.counters.flood_pdus_sent += volley
            self.send(
                b"".join(header_only(ENQUIRE_LINK, 0, self.next_sequence()) for _ in range(volley))
            )
        self._later("flood", FLOOD_TICK, self._flood)

    def _enquire(self) -> None:
        interval = self.sim.config.enquire_link_interval
        if self.closing or not interval:
            return
        if self._unanswered_enquires >= DEAD_LINK_ENQUIRES:
            self.abort(f"{DEAD_LINK_ENQUIRES} enquire_link unanswered")
            return
        self._unanswered_enquires += 1
        self.sim.counters.enquire_links_sent += 1
        self.send(header_only(ENQUIRE_LINK, 0, self.next_sequence()))
        self._later("enquire_link", interval, self._enquire)

    # -- submit_sm / query_sm ----------------------------------------------------------

    def _on_submit(self, sequence: int, data: bytes) -> bool:
        """Answer one submit_sm; True when its response went on a timer (response_delay)."""
        sim = self.sim
        config = sim.config
        counters = sim.counters
        now = self.loop.time()
        counters.submits_received += 1
        sim.count_submit_rate(now)
        if not self.can_submit:
            self.send(header_only(SUBMIT_SM | RESPONSE, ESME_RINVBNDSTS, sequence))
            return False
        if now < self._queue_full_until:
            counters.queue_full += 1
            self.send(header_only(SUBMIT_SM | RESPONSE, ESME_RMSGQFUL, sequence))
            return False
        if config.max_window and self.outstanding > config.max_window:
            counters.window_violations += 1
            self.send(header_only(SUBMIT_SM | RESPONSE, ESME_RTHROTTLED, sequence))
            return False
        if config.max_rate and not self._take_token(now, config.max_rate):
            counters.throttled += 1
            self.send(header_only(SUBMIT_SM | RESPONSE, ESME_RTHROTTLED, sequence))
            return False
        try:
            pdu = parse_submit_sm(data)
        except (ValueError, IndexError, struct.error):
            pdu = self._decode(sequence, data)  # odd PDU: let smpplib have its say
            if pdu is None:
                return False
        chance = sim.random.random
        if config.error_rate and chance() < config.error_rate:
            counters.rejected_fault += 1
            status = config.error_status
            return self._respond(sequence, header_only(SUBMIT_SM | RESPONSE, status, sequence))
        destination = as_text(pdu.destination_addr)
        if sim.is_rejected_destination(destination) or len(destination) > ADDRESS_MAX:
            counters.rejected += 1
            return self._respond(
                sequence, header_only(SUBMIT_SM | RESPONSE, ESME_RINVDSTADR, sequence)
            )
        if len(pdu.source_addr or b"") > ADDRESS_MAX:
            counters.rejected += 1
            return self._respond(
                sequence, header_only(SUBMIT_SM | RESPONSE, ESME_RINVSRCADR, sequence)
            )
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

    def _take_token(self, now: float, rate: float) -> bool:
        """Token bucket: ``rate`` submits per second, bursts up to one second's worth."""
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

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
            self.send(header_only(QUERY_SM | RESPONSE, ESME_RINVBNDSTS, sequence))
            return
        pdu = self._decode(sequence, data)
        if pdu is None:
            return
        self.sim.counters.queries += 1
        message_id = as_text(pdu.message_id)
        record = self.sim.find_submit(message_id)
        if record is None:
            self.send(header_only(QUERY_SM | RESPONSE, ESME_RINVMSGID, sequence))
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

    # -- deliver_sm (receipts, MO) ---------------------------------------------------

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
