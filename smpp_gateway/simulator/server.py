"""``SMSCSimulator``: the listening socket, message ids, the submit log, receipts and MO."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
from collections import deque
from typing import Any

from smpp.pdu import as_text
from smpp_gateway.simulator.config import STATE_BY_STAT, SimulatorConfig
from smpp_gateway.simulator.control import ControlServer
from smpp_gateway.simulator.deliveries import JUNK, MO, RECEIPT, Delivery, Outbox, OwedFile, Timers
from smpp_gateway.simulator.id_styles import message_ids
from smpp_gateway.simulator.records import Stats, SubmitRecord
from smpp_gateway.simulator.session import ESME_RALYBND, SMPPSession
from smpp_gateway.simulator.texts import receipt_text, smpp_absolute_time, split_mo, user_text
from smpp_gateway.simulator.wire import ADDRESS_MAX, data_sm, deliver_sm, truncated

log = logging.getLogger("smpp_gateway.simulator")

ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
GSM_NETWORK = 3  # network_error_code's first octet: the error comes from a GSM network
JUNK_SOURCE = "66600000"  # the source_addr of the deliver_sm cut short (truncated_deliver_rate)
LONG_ID_PREFIX = "hostile-smsc-id-"  # message_id_length: ids share it, as cut ones would
STOP_GRACE = 1.0  # seconds stop() waits for clients to answer our unbind


def _ton_npi(address: str) -> tuple[int, int]:
    """TON/NPI an SMSC would give an address: international number, else alphanumeric."""
    if address.lstrip("+").isdigit():
        return 1, 1
    return 5, 0


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
        self.sessions: dict[int, SMPPSession] = {}
        self._session_ids = itertools.count(1)
        self._next_message_id = self.config.first_message_id
        self._records: deque[SubmitRecord] = deque()
        self._first_index = 0  # index of _records[0]: older records were dropped
        self._by_id: dict[str, SubmitRecord] = {}
        self._seen: dict[int, int] = {}  # content key -> how many records carry it
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
            lambda: SMPPSession(self, next(self._session_ids)),
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
            records=len(self._records),
            next_index=self.next_index,
        )
        return data

    @property
    def next_index(self) -> int:
        """The ``index`` the next accepted submit will get."""
        return self._first_index + len(self._records)

    @property
    def submits(self) -> list[SubmitRecord]:
        """Accepted submits in arrival order (the last ``record_limit`` of them)."""
        return list(self._records)

    def submits_since(self, index: int, limit: int | None = None) -> list[SubmitRecord]:
        """Accepted submits whose ``index`` is ``index`` or later."""
        start = max(0, index - self._first_index)
        stop = None if limit is None else start + limit
        return list(itertools.islice(self._records, start, stop))

    def find_submit(self, message_id: str) -> SubmitRecord | None:
        """The submit answered with ``message_id`` (in the form submit_sm_resp carried)."""
        return self._by_id.get(message_id)

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
        self._first_index += len(self._records)
        self._records.clear()
        self._by_id.clear()
        self._seen.clear()

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
        address_limit = ADDRESS_MAX
        if self.config.mo_source_addr_length:  # a source_addr longer than SMPP allows
            src = src.ljust(self.config.mo_source_addr_length, "0")
            address_limit = max(ADDRESS_MAX, len(src))
        source_ton, source_npi = _ton_npi(src)
        dest_ton, dest_npi = _ton_npi(dst)
        owner = system_id or self.config.system_id
        for part in parts:
            fields: dict[str, Any] = dict(
                source_addr_ton=source_ton,
                source_addr_npi=source_npi,
                source_addr=src,
                dest_addr_ton=dest_ton,
                dest_addr_npi=dest_npi,
                destination_addr=dst,
                esm_class=part.esm_class,
                data_coding=part.data_coding,
                short_message=part.short_message,
                address_limit=address_limit,
                **part.sar,
            )
            if part.message_payload is not None:
                fields["message_payload"] = part.message_payload
            self.counters.mo_queued += 1
            self.outbox.put(Delivery(MO, owner, self._incoming_pdu()(0, **fields)))
        return len(parts)

    # -- used by sessions --------------------------------------------------------------

    def session_opened(self, session: SMPPSession) -> None:
        self.sessions[session.id] = session

    def session_closed(self, session: SMPPSession) -> None:
        self.sessions.pop(session.id, None)
        self.counters.disconnects += 1
        if self._outbox is not None and session.system_id:
            self._outbox.remove_receiver(session)
            self._outbox.put_back(session.system_id, session.take_inflight())

    def session_bound(self, session: SMPPSession) -> None:
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

    def is_rejected_destination(self, destination: str) -> bool:
        prefix = self.config.reject_dst_prefix
        return (
            not destination
            or destination.startswith("rej")
            or bool(prefix and destination.startswith(prefix))
        )

    def accept_submit(self, session: SMPPSession, pdu: Any, destination: str) -> SubmitRecord:
        """Give an accepted submit_sm its message id and log it."""
        number = self._next_message_id
        self._next_message_id += 1
        if self.config.id_style:  # the receipt names it as the style says (id_styles)
            id_str, receipt_id = message_ids(self.config.id_style, number)
        else:
            id_str = format(number, "x") if self.config.hex_ids else str(number)
            receipt_id = ""
        if self.config.message_id_length:
            # Longer than SMPP's 64, sharing a long prefix: cut, they would all be one id.
            id_str = LONG_ID_PREFIX.ljust(self.config.message_id_length - len(id_str), "x") + id_str
            if receipt_id:
                length = self.config.message_id_length - len(receipt_id)
                receipt_id = LONG_ID_PREFIX.ljust(length, "x") + receipt_id
        short_message = pdu.short_message or b""
        payload = pdu.message_payload
        key = hash(
            (
                destination,
                short_message,
                payload,
                pdu.sar_msg_ref_num,
                pdu.sar_total_segments,
                pdu.sar_segment_seqnum,
            )
        )
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        if seen:
            self.counters.duplicates += 1
        record = SubmitRecord(
            index=self.next_index,
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
            short_message=short_message,
            message_payload=payload,
            sar_msg_ref_num=pdu.sar_msg_ref_num,
            sar_total_segments=pdu.sar_total_segments,
            sar_segment_seqnum=pdu.sar_segment_seqnum,
            received_at=time.time(),
            duplicate=bool(seen),
            dup_key=key,
        )
        self.counters.accepted += 1
        self._records.append(record)
        self._by_id[record.id_str] = record
        if len(self._records) > self.config.record_limit:
            self._forget(self._records.popleft())
        return record

    def _forget(self, record: SubmitRecord) -> None:
        self._first_index += 1
        if self._by_id.get(record.id_str) is record:
            del self._by_id[record.id_str]
        left = self._seen.get(record.dup_key, 1) - 1
        if left:
            self._seen[record.dup_key] = left
        else:
            self._seen.pop(record.dup_key, None)

    def settle_at(self, record: SubmitRecord, due: float) -> None:
        """At loop time ``due`` the handset has the message (or not): see ``settle``."""
        self.timers.call_at(due, self.settle, record)

    def settle(self, record: SubmitRecord) -> None:
        """Fix the submit's final state and queue its receipt, if it asked for one.

        registered_delivery & 3: 1 = a receipt for every outcome, 2 = only for
        failures, 0 (and the reserved 3) = none.
        """
        stat = self.outcome(record.destination_addr)
        error = 0 if stat == "DELIVRD" else 1
        record.message_state = STATE_BY_STAT[stat]
        record.error_code = error
        record.final_at = time.time()
        wanted = record.registered_delivery & 0x03
        if wanted == 1 or (wanted == 2 and stat != "DELIVRD"):
            self.counters.receipts_generated += 1
            record.receipt = "queued"
            rate = self.config.truncated_deliver_rate
            if rate and self.random.random() < rate:
                self.outbox.put(Delivery(JUNK, record.system_id, self._truncated_pdu()))
            pdu = self._receipt_pdu(record, stat, error)
            self.outbox.put(Delivery(RECEIPT, record.system_id, pdu, record))

    def outcome(self, destination: str) -> str:
        """The receipt stat for a destination (see the package docstring)."""
        config = self.config
        if config.receipt_stat:
            return config.receipt_stat.upper()
        if destination.startswith("undeliv") or (
            config.undeliv_dst_prefix and destination.startswith(config.undeliv_dst_prefix)
        ):
            return "UNDELIV"
        if destination.startswith("expire") or (
            config.expire_dst_prefix and destination.startswith(config.expire_dst_prefix)
        ):
            return "EXPIRED"
        return "DELIVRD"

    def _truncated_pdu(self) -> bytes:
        """An incoming message whose body is cut short (one of two ways, in turn)."""
        self.counters.truncated_sent += 1
        pdu = deliver_sm(0, source_addr=JUNK_SOURCE, destination_addr="1", short_message=b"junk!")
        return truncated(pdu, self.counters.truncated_sent % 2)

    def _receipt_pdu(self, record: SubmitRecord, stat: str, error: int) -> bytes:
        """The receipt deliver_sm, from the handset (the submit's destination) to its source."""
        config = self.config
        fields: dict[str, Any] = dict(
            source_addr_ton=record.dest_addr_ton,
            source_addr_npi=record.dest_addr_npi,
            source_addr=record.destination_addr,
            dest_addr_ton=record.source_addr_ton,
            dest_addr_npi=record.source_addr_npi,
            destination_addr=record.source_addr,
            esm_class=0x04,
        )
        if config.receipt_text:
            text = user_text(record.text_octets, record.esm_class, record.data_coding)
            fields["short_message"] = receipt_text(
                record.receipt_id or record.message_id,
                stat,
                error,
                record.received_at,
                record.final_at or 0.0,
                text,
            )
            if config.receipt_nul:  # PostgreSQL's text cannot hold these
                fields["short_message"] += b"\0\0nul\0"
        if config.receipt_tlvs:
            fields["receipted_message_id"] = record.receipt_id or record.id_str
            fields["message_state"] = record.message_state
            fields["network_error_code"] = bytes((GSM_NETWORK,)) + error.to_bytes(2, "big")
        longest = max(len(record.id_str), len(record.receipt_id))
        return self._incoming_pdu()(0, message_id_limit=max(64, longest), **fields)

    def _incoming_pdu(self):  # noqa: ANN202
        """What receipts and MO go out as: deliver_sm, or data_sm (``data_sm``)."""
        return data_sm if self.config.data_sm else deliver_sm

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
