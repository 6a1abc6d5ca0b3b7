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
from typing import TYPE_CHECKING

from smpp.coalesced_writer import CoalescedWriter
from smpp.command_status import (
    ESME_RALYBND,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
)
from smpp.constants import (
    BIND_RECEIVER,
    BIND_TRANSCEIVER,
    BIND_TRANSMITTER,
    DATA_SM_RESP,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    GENERIC_NACK,
    QUERY_SM,
    RESPONSE_BIT,
    SUBMIT_SM,
    UNBIND,
    UNBIND_RESP,
)
from smpp.flow import TokenBucket
from smpp.framing import PDUFormatError, PDUFrames, unpack_header
from smpp.pdu import as_text, decode_pdu, encode_pdu
from smpp.sequence import SequenceNumbers
from smpp_gateway.simulator.deliveries import MO, Delivery
from smpp_gateway.simulator.delivery_desk import DeliveryDesk
from smpp_gateway.simulator.submits import SubmitDesk
from smpp_gateway.simulator.wire import deliver_sm, header_only

if TYPE_CHECKING:
    from smpp_gateway.simulator.server import SMSCSimulator

log = logging.getLogger("smpp_gateway.simulator")

# command_id -> (name, may submit, may receive deliver_sm)
BIND_KINDS: dict[int, tuple[str, bool, bool]] = {
    BIND_RECEIVER: ("bind_receiver", False, True),
    BIND_TRANSMITTER: ("bind_transmitter", True, False),
    BIND_TRANSCEIVER: ("bind_transceiver", True, True),
}
DEAD_LINK_ENQUIRES = 3  # our enquire_links left unanswered before we drop the link
FLOOD_TICK = 0.005  # seconds between two volleys of a flood
FLOOD_BUFFER_MAX = 1024 * 1024  # octets the flood leaves in our own write buffer, at most
UNBIND_GRACE = 5.0  # seconds we wait for unbind_resp after sending unbind


class SMSCSession(SubmitDesk, DeliveryDesk, asyncio.Protocol):
    """The SMSC side of one TCP connection: the wire, the bind, the link's upkeep.

    What it answers to submits is ``SubmitDesk``'s; the deliver_sm it sends and
    their answers are ``DeliveryDesk``'s.
    """

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
        self._frames = PDUFrames()
        # Everything sent in one loop turn goes in one write.
        self._out = CoalescedWriter()
        self.send = self._out.write
        self.next_sequence = SequenceNumbers().next
        self._rate = TokenBucket(None)  # max_rate, from the bind on (``_take_token``)
        self._timers: dict[str, asyncio.TimerHandle] = {}  # by purpose, one each
        self._unanswered_enquires = 0
        self._unbind_sequence: int | None = None
        self._queue_full_until = 0.0  # loop time (queue_full_for): every submit gets 0x14

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._out.transport = transport
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
        self._out.discard()
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
        self._out.flush()
        self.closing = True
        self.transport.abort()

    def _close_gracefully(self) -> None:
        self._out.flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _later(self, purpose: str, delay: float, callback, *args) -> None:  # noqa: ANN001
        """Run ``callback`` once after ``delay``; cancelled when the connection goes."""
        previous = self._timers.get(purpose)
        if previous is not None:
            previous.cancel()
        self._timers[purpose] = self.loop.call_later(delay, callback, *args)

    # -- input -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            for pdu in self._frames.feed(data):
                if self.closing:
                    return
                _, command_id, status, sequence = unpack_header(pdu)
                was_bound = self.bound
                self._dispatch(command_id, status, sequence, pdu)
                if was_bound:
                    self.pdus_after_bind += 1
                    config = self.sim.config
                    if config.disconnect_every_pdus or config.flood_after_pdus:
                        self._pdu_count_faults()
            broken = self._frames.broken
            if broken is not None and not self.closing:
                # The stream is desynchronised: nothing after this can be trusted.
                self._nack(broken[3], ESME_RINVCMDLEN)
                log.warning("session %d: impossible command_length %d", self.id, broken[0])
                self._close_gracefully()
        finally:
            self._out.flush()
            # What was answered in this read has left: no longer outstanding.
            self.outstanding -= self._answered_now
            self._answered_now = 0

    def _pdu_count_faults(self) -> None:
        """The faults that count PDUs after the bind: disconnect_every_pdus, flood_after_pdus."""
        config = self.sim.config
        every = config.disconnect_every_pdus
        if every and self.pdus_after_bind >= every:
            self.abort(f"disconnect_every_pdus={every}", fault=True)
        flood = config.flood_after_pdus
        if flood and self.pdus_after_bind == flood and not self.flooding:
            self._start_flood()

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
        elif command_id & RESPONSE_BIT:
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
        if the client asks (ESME_RX_T_APPN), as any deliver_sm."""
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
        self._start_rate()
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
