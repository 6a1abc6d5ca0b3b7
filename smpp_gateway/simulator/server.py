"""``SMSCSimulator``: the listening socket, message ids, the submit log, receipts and MO.

One object per simulated SMSC (about 420 lines: its public face for tests and
the control port is most of it); what stands alone lives beside it: the submit
log (``submit_log``), the PDUs it sends (``smsc_pdus``), a connection
(``session``, ``submits``, ``delivery_desk``) and what it owes (``deliveries``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
from typing import Any

from smpp.command_status import ESME_RALYBND, ESME_RINVPASWD, ESME_RINVSYSID
from smpp.constants import (
    RECEIPT_ALWAYS,
    RECEIPT_ON_FAILURE,
    REGISTERED_DELIVERY_RECEIPT,
)
from smpp.pdu import as_text
from smpp_gateway.simulator.config import STATE_BY_STAT, SimulatorConfig
from smpp_gateway.simulator.control import ControlServer
from smpp_gateway.simulator.deliveries import JUNK, MO, RECEIPT, Delivery, Outbox, OwedFile, Timers
from smpp_gateway.simulator.id_styles import message_ids
from smpp_gateway.simulator.records import Stats, SubmitRecord
from smpp_gateway.simulator.session import SMSCSession
from smpp_gateway.simulator.smsc_pdus import mo_pdus, receipt_pdu
from smpp_gateway.simulator.submit_log import SubmitLog
from smpp_gateway.simulator.texts import smpp_absolute_time, split_mo
from smpp_gateway.simulator.wire import deliver_sm, truncated

log = logging.getLogger("smpp_gateway.simulator")

JUNK_SOURCE = "66600000"  # the source_addr of the deliver_sm cut short (truncated_deliver_rate)
LONG_ID_PREFIX = "hostile-smsc-id-"  # message_id_length: ids share it, as cut ones would
STOP_GRACE = 1.0  # seconds stop() waits for clients to answer our unbind


class SMSCSimulator:
    """An SMSC on a TCP port, with the faults a gateway must survive.

    Everything runs on the event loop that called ``start()``; the methods are
    not thread-safe (``SimulatorThread`` wraps them for synchronous code).
    """

    def __init__(self, config: SimulatorConfig | None = None, **changes: Any):
        config = config or SimulatorConfig()
        self.config = config.replace(**changes) if changes else config
        self.counters = Stats()
        self.random = random.Random(self.config.seed)
        self.port: int = self.config.port
        self.control_port: int | None = None
        self.sessions: dict[int, SMSCSession] = {}
        self._session_ids = itertools.count(1)
        self._next_message_id = self.config.first_message_id
        self._log = SubmitLog()
        self._concat_reference = self.random.randrange(0x10000)
        self._rate_second = -1
        self._rate_count = 0
        self._server: asyncio.Server | None = None
        self._control: ControlServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._timers: Timers | None = None
        self._outbox: Outbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for SMPP (and HTTP control, if configured); ``.port`` is the real port."""
        self._loop = asyncio.get_running_loop()
        self._timers = Timers(self._loop)
        self._outbox = Outbox(self._timers)
        if self.config.owed_file:
            owed = OwedFile(self.config.owed_file).load()
            for delivery in owed:
                self._outbox.put(delivery)  # sent on the first bind of its system_id
            if owed:
                log.info("%d receipts/MO owed from before the restart", len(owed))
        tls = None
        if self.config.tls_cert:  # SMPP over TLS, as some SMSCs offer it
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self._server = await self._loop.create_server(
            lambda: SMSCSession(self, next(self._session_ids)),
            self.config.host,
            self.config.port,
            ssl=tls,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.control_port is not None:
            self._control = ControlServer(self)
            self.control_port = await self._control.start(
                self.config.host, self.config.control_port
            )
        self._sweeper = asyncio.create_task(self._sweep_timeouts())
        log.info(
            "SMSC simulator listening on %s:%d%s",
            self.config.host,
            self.port,
            f", control port {self.control_port}" if self.control_port is not None else "",
        )

    async def stop(self) -> None:
        """Unbind the clients (waiting a moment for their answers) and close everything."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self.sessions.values()):
            if not session.send_unbind():
                session.abort("simulator stopping")
        deadline = time.monotonic() + STOP_GRACE
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for session in list(self.sessions.values()):
            session.abort("simulator stopping")
        while self.sessions and time.monotonic() < deadline + STOP_GRACE:
            await asyncio.sleep(0.01)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._control is not None:
            await self._control.stop()
        if self.config.owed_file:
            self._save_owed()
        self.timers.cancel_all()
        await self._server.wait_closed()
        self._server = None
        log.info("SMSC simulator on port %d stopped", self.port)

    def _save_owed(self) -> None:
        """Keep what is still owed (see ``OwedFile``): receipts not yet due are settled now."""
        for callback, argument in self.timers.take_all():
            if callback == self.settle:
                self.settle(argument)  # the handset has it by the time we are back
            elif callback == self.outbox.put:
                self.outbox.put(argument)  # a redelivery waiting for its delay
        saved = OwedFile(self.config.owed_file).save(self.outbox.take_all())
        if saved:
            log.info(
                "%d receipts/MO owed, kept in %s for the next start", saved, self.config.owed_file
            )

    async def __aenter__(self) -> SMSCSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def timers(self) -> Timers:
        assert self._timers is not None, "start() the simulator first"
        return self._timers

    @property
    def outbox(self) -> Outbox:
        assert self._outbox is not None, "start() the simulator first"
        return self._outbox

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() the simulator first"
        return self._loop

    # -- public, for tests and the control port ----------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters plus gauges of the moment (open sessions, pending deliveries)."""
        data: dict[str, Any] = self.counters.as_dict()
        counters = self.counters
        data.update(
            connections_open=len(self.sessions),
            sessions_bound=sum(1 for s in self.sessions.values() if s.bound),
            receipts_pending=counters.receipts_generated - counters.receipts_acknowledged,
            mo_pending=counters.mo_queued - counters.mo_acknowledged,
            deliveries_waiting=self._outbox.pending() if self._outbox else 0,
            deliveries_unanswered=sum(len(s.inflight) for s in self.sessions.values()),
            outstanding=sum(s.outstanding for s in self.sessions.values()),
            records=len(self._log),
            next_index=self.next_index,
        )
        return data

    @property
    def next_index(self) -> int:
        """The ``index`` the next accepted submit will get."""
        return self._log.next_index

    @property
    def submits(self) -> list[SubmitRecord]:
        """Accepted submits in arrival order (the last ``record_limit`` of them)."""
        return self._log.all()

    def submits_since(self, index: int, limit: int | None = None) -> list[SubmitRecord]:
        """Accepted submits whose ``index`` is ``index`` or later."""
        return self._log.since(index, limit)

    def find_submit(self, message_id: str) -> SubmitRecord | None:
        """The submit answered with ``message_id`` (in the form submit_sm_resp carried)."""
        return self._log.find(message_id)

    def set_config(self, **changes: Any) -> SimulatorConfig:
        """Change settings at run time (validated); returns the new config.

        Session-level timers (enquire_link_interval, disconnect_every_seconds)
        apply to sessions bound afterwards; ``first_message_id`` restarts the
        id counter there. ``owed_file`` is fixed at start: a control client
        must not choose a file for the simulator to write.
        """
        if "owed_file" in changes:
            raise ValueError("owed_file is set at start only")
        self.config = self.config.replace(**changes)
        if "seed" in changes:
            self.random.seed(self.config.seed)
        if "first_message_id" in changes:
            self._next_message_id = self.config.first_message_id
        return self.config

    def reset(self) -> None:
        """Forget counters and recorded submits (deliveries still pending are kept)."""
        self.counters = Stats()
        self._log.clear()

    def unbind_all(self) -> int:
        """Send unbind to every bound session, as an SMSC going for maintenance does."""
        return sum(1 for session in list(self.sessions.values()) if session.send_unbind())

    def inject_mo(
        self,
        src: str,
        dst: str,
        text: str,
        encoding: str = "gsm7",
        split: str = "none",
        out_of_order: bool = False,
        system_id: str | None = None,
    ) -> int:
        """Queue an incoming message from handset ``src`` to ``dst``; returns the part count.

        The parts go to a receiver/transceiver session of ``system_id`` (the
        configured account by default) as soon as one is bound, and are resent
        until acknowledged, like receipts. ``out_of_order`` sends the parts last
        to first.
        """
        self._concat_reference = (self._concat_reference + 1) % 0x10000
        reference = self._concat_reference if split == "sar" else self._concat_reference & 0xFF
        parts = split_mo(text, encoding, split, reference)
        if out_of_order:
            parts.reverse()
        owner = system_id or self.config.system_id
        for pdu in mo_pdus(self.config, src, dst, parts):
            self.counters.mo_queued += 1
            self.outbox.put(Delivery(MO, owner, pdu))
        return len(parts)

    # -- used by sessions --------------------------------------------------------------

    def session_opened(self, session: SMSCSession) -> None:
        self.sessions[session.id] = session

    def session_closed(self, session: SMSCSession) -> None:
        self.sessions.pop(session.id, None)
        self.counters.disconnects += 1
        if self._outbox is not None and session.system_id:
            self._outbox.remove_receiver(session)
            self._outbox.put_back(session.system_id, session.take_inflight())

    def session_bound(self, session: SMSCSession) -> None:
        if session.can_receive:
            self.outbox.add_receiver(session)

    def check_bind(self, system_id: str, password: str) -> int:
        """bind_resp status for these credentials: 0, or why not."""
        config = self.config
        if system_id != config.system_id:
            return ESME_RINVSYSID
        if password != config.password:
            return ESME_RINVPASWD
        if config.max_binds_per_user:
            bound = sum(1 for s in self.sessions.values() if s.bound and s.system_id == system_id)
            if bound >= config.max_binds_per_user:
                return ESME_RALYBND
        return 0

    def count_submit_rate(self, now: float) -> None:
        """Track the most submits received within one clock second (``max_rate_seen``)."""
        second = int(now)
        if second != self._rate_second:
            self._rate_second = second
            self._rate_count = 0
        self._rate_count += 1
        if self._rate_count > self.counters.max_rate_seen:
            self.counters.max_rate_seen = self._rate_count

    def accept_submit(self, session: SMSCSession, pdu: Any, destination: str) -> SubmitRecord:
        """Give an accepted submit_sm its message id and log it."""
        config = self.config
        number = self._next_message_id
        self._next_message_id += 1
        if config.id_style or config.message_id_length:
            id_str, receipt_id = self._styled_ids(number)
        else:  # the usual case, without a call
            id_str, receipt_id = format(number, "x") if config.hex_ids else str(number), ""
        submit_log = self._log
        record = SubmitRecord(
            index=submit_log.next_index,
            message_id=number,
            id_str=id_str,
            receipt_id=receipt_id,
            system_id=session.system_id,
            session=session.id,
            source_addr=as_text(pdu.source_addr),
            source_addr_ton=pdu.source_addr_ton or 0,
            source_addr_npi=pdu.source_addr_npi or 0,
            destination_addr=destination,
            dest_addr_ton=pdu.dest_addr_ton or 0,
            dest_addr_npi=pdu.dest_addr_npi or 0,
            esm_class=pdu.esm_class or 0,
            data_coding=pdu.data_coding or 0,
            registered_delivery=pdu.registered_delivery or 0,
            short_message=pdu.short_message or b"",
            message_payload=pdu.message_payload,
            sar_msg_ref_num=pdu.sar_msg_ref_num,
            sar_total_segments=pdu.sar_total_segments,
            sar_segment_seqnum=pdu.sar_segment_seqnum,
            received_at=time.time(),
            duplicate=False,  # both set by the log
            dup_key=0,
        )
        self.counters.accepted += 1
        submit_log.add(record, config.record_limit)
        if record.duplicate:
            self.counters.duplicates += 1
        return record

    def _styled_ids(self, number: int) -> tuple[str, str]:
        """(the id submit_sm_resp carries, the id the receipt names or ""), for id_style
        and message_id_length."""
        config = self.config
        if config.id_style:  # the receipt names it as the style says (id_styles)
            id_str, receipt_id = message_ids(config.id_style, number)
        else:
            id_str = format(number, "x") if config.hex_ids else str(number)
            receipt_id = ""
        if config.message_id_length:
            # Longer than SMPP's 64, sharing a long prefix: cut, they would all be one id.
            id_str = LONG_ID_PREFIX.ljust(config.message_id_length - len(id_str), "x") + id_str
            if receipt_id:
                length = config.message_id_length - len(receipt_id)
                receipt_id = LONG_ID_PREFIX.ljust(length, "x") + receipt_id
        return id_str, receipt_id

    def settle_at(self, record: SubmitRecord, due: float) -> None:
        """At loop time ``due`` the handset has the message (or not): see ``settle``."""
        self.timers.call_at(due, self.settle, record)

    def settle(self, record: SubmitRecord) -> None:
        """Fix the submit's final state and queue its receipt, if it asked for one.

        registered_delivery & 3: 1 = a receipt for every outcome, 2 = only for
        failures, 0 (and the reserved 3) = none.
        """
        stat = self.config.receipt_stat_for(record.destination_addr)
        error = 0 if stat == "DELIVRD" else 1
        record.message_state = STATE_BY_STAT[stat]
        record.error_code = error
        record.final_at = time.time()
        wanted = record.registered_delivery & REGISTERED_DELIVERY_RECEIPT
        if wanted == RECEIPT_ALWAYS or (wanted == RECEIPT_ON_FAILURE and stat != "DELIVRD"):
            self.counters.receipts_generated += 1
            record.receipt = "queued"
            rate = self.config.truncated_deliver_rate
            if rate and self.random.random() < rate:
                self.outbox.put(Delivery(JUNK, record.system_id, self._truncated_pdu()))
            pdu = receipt_pdu(self.config, record, stat, error)
            self.outbox.put(Delivery(RECEIPT, record.system_id, pdu, record))

    def _truncated_pdu(self) -> bytes:
        """An incoming message whose body is cut short (one of two ways, in turn)."""
        self.counters.truncated_sent += 1
        pdu = deliver_sm(0, source_addr=JUNK_SOURCE, destination_addr="1", short_message=b"junk!")
        return truncated(pdu, self.counters.truncated_sent % 2)

    def final_date(self, record: SubmitRecord) -> str:
        """query_sm_resp's final_date: empty while the message is en route."""
        return smpp_absolute_time(record.final_at) if record.final_at is not None else ""

    def delivered(self, delivery: Delivery) -> None:
        """A client acknowledged a deliver_sm with status 0."""
        if delivery.kind == RECEIPT:
            self.counters.receipts_acknowledged += 1
            if delivery.record is not None:
                delivery.record.receipt = "acknowledged"
        elif delivery.kind == JUNK:
            self.counters.truncated_accepted += 1  # the client took garbage for a message
        else:
            self.counters.mo_acknowledged += 1

    def refused(self, delivery: Delivery, status: int) -> None:
        """A client refused a deliver_sm for good: a real SMSC drops it (and logs it)."""
        self.counters.deliveries_refused += 1
        if delivery.record is not None:
            delivery.record.receipt = "refused"
        log.info("deliver_sm (%s) refused for good with 0x%02x: dropped", delivery.kind, status)

    async def _sweep_timeouts(self) -> None:
        """Resend deliver_sm that were not answered within deliver_timeout."""
        while True:
            timeout = self.config.deliver_timeout
            await asyncio.sleep(min(0.5, max(0.01, timeout / 4)))
            now = self.loop.time()
            for session in list(self.sessions.values()):
                expired = session.expire_deliveries(now, timeout)
                if not expired:
                    continue
                self.counters.deliver_timeouts += len(expired)
                log.info(
                    "session %d (%s): %d deliver_sm not answered in %.1f s, will resend",
                    session.id,
                    session.system_id,
                    len(expired),
                    timeout,
                )
                for delivery in expired:
                    self.outbox.retry(delivery, self.config.redeliver_delay, now)
