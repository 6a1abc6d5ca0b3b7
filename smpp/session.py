"""One SMPP bind over asyncio: the link, the window and the timers.

The session knows PDUs and nothing of the store. It pipelines submit_sm up to
a window, matches each response to its submit by sequence number, answers the
SMSC's enquire_link and unbind, sends its own enquire_link when the link is
idle, and declares the link dead when the SMSC falls silent. What to do with
responses and deliver_sm is the owner's business, through two callbacks; a
data_sm from the SMSC (an incoming message or a receipt, as SMPP 3.4 allows)
goes the same way and is answered with data_sm_resp.

Opening the link (connect, bind) is ``smpp.bind``; the stream is cut into PDUs
by ``smpp.framing``, written through ``smpp.coalesced_writer``, and the
deliver_sm wait for their answers in ``smpp.deliver_intake``. What is left here
(about 450 lines) is one class on purpose: the window, the timers and the
requests share one link's state, and the hot path reads it without a hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from smpp.bind import (
    BIND_RESPONSES,
    NO_BIND_ANSWER,
    BindRefused,
    BindUnanswered,
    LinkError,
    bind_unanswered,
    connect,
    read_bind_response,
)
from smpp.coalesced_writer import CoalescedWriter
from smpp.command_status import ESME_RINVCMDID, ESME_ROK, status_name
from smpp.constants import (
    DATA_SM,
    DELIVER_SM,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    GENERIC_NACK,
    INTERFACE_VERSION,
    RESPONSE_BIT,
    SUBMIT_SM_RESP,
    UNBIND,
)
from smpp.deliver_intake import DeliverIntake
from smpp.flow import TokenBucket
from smpp.framing import PDUFormatError, PDUFrames, pack_header, unpack_header
from smpp.pdu import decode_pdu, encode_pdu
from smpp.pdu_fast import (
    decode_deliver_sm,
    encode_data_sm_resp,
    encode_deliver_sm_resp,
    encode_submit_sm,
)
from smpp.sequence import SequenceNumbers
from smpp.session_config import DeliverCallback, SessionConfig, SubmitCallback

__all__ = [
    "BindRefused",
    "BindUnanswered",
    "DeliverCallback",
    "LinkError",
    "SMPPSession",
    "SessionConfig",
    "SubmitCallback",
]

logger = logging.getLogger(__name__)

# command_id octets of what the read loop queues for the owner (``DeliverIntake``).
INCOMING_IDS = (DELIVER_SM.to_bytes(4, "big"), DATA_SM.to_bytes(4, "big"))
READ_SIZE = 256 * 1024  # one read takes every PDU the socket holds, up to this


class SMPPSession:
    """A bound transceiver session. Open with ``open()``, then ``run()`` until it ends."""

    def __init__(
        self,
        config: SessionConfig,
        on_submit_response: SubmitCallback,
        on_deliver: DeliverCallback,
    ):
        self.config = config
        self.on_submit_response = on_submit_response
        self.on_deliver = on_deliver
        self.bind_id = uuid.uuid4().hex[:12]
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_sequence = SequenceNumbers().next
        # sequence -> (token, deadline) for submits awaiting their response
        self._in_flight: dict[int, tuple[Any, float]] = {}
        # sequence -> future for our own requests (enquire_link, unbind)
        self._requests: dict[int, asyncio.Future] = {}
        self._window_open = asyncio.Event()
        self._window_open.set()
        # PDUs written in one turn of the event loop leave in one write (one syscall).
        self._out = CoalescedWriter(
            buffer_limit=config.write_buffer_limit, on_overflow=self._peer_not_reading
        )
        self._write = self._out.write
        # deliver_sm received, read after the responses beside them, until answered
        self._intake = DeliverIntake(config.max_unanswered_delivers, self._dispatch)
        self._last_read = time.monotonic()
        self._closing = False
        self.close_reason = ""
        # The SMSC's requests beyond deliver_sm: a burst of two seconds' worth passes,
        # a flood resets the link (``_peer_flooding``).
        rate = config.peer_request_rate
        self._peer_requests = TokenBucket(rate if rate > 0 else None, burst=2 * rate)

    # --- opening and closing --------------------------------------------------------

    async def open(self) -> None:
        """Connect and bind (as ``bind_kind`` says); raises LinkError or BindRefused."""
        cfg = self.config
        response_id = BIND_RESPONSES.get(cfg.bind_kind)
        if response_id is None:
            raise ValueError(f"unknown bind kind {cfg.bind_kind!r}")
        self._reader, self._writer = await connect(cfg)
        self._out.transport = self._writer.transport
        seq = self._next_sequence()
        self._write(
            encode_pdu(
                f"bind_{cfg.bind_kind}",
                seq,
                system_id=cfg.system_id,
                password=cfg.password,
                system_type=cfg.system_type,
                interface_version=INTERFACE_VERSION,
            )
        )
        try:
            status = await asyncio.wait_for(
                read_bind_response(self._reader, self._write, seq, response_id),
                cfg.response_timeout,
            )
        except NO_BIND_ANSWER as exc:
            self._abort()
            raise bind_unanswered(exc, cfg.response_timeout) from exc
        except LinkError:
            self._abort()
            raise
        if status != ESME_ROK:
            self._abort()
            raise BindRefused(status)
        self._last_read = time.monotonic()

    async def unbind(self, timeout: float = 5.0) -> None:
        """Say goodbye properly, then close."""
        if self._writer is None or self._writer.is_closing():
            return
        self._closing = True
        self.close_reason = "unbound: the worker is stopping"
        with contextlib.suppress(asyncio.TimeoutError, LinkError, OSError):
            await asyncio.wait_for(self._request("unbind"), timeout)
        self._abort()

    def close(self, reason: str) -> None:
        """Drop the link now (the owner reconnects); unanswered submits are lost."""
        self.close_reason = reason
        self._abort()

    def _abort(self) -> None:
        if self._writer is not None:
            self._out.flush()  # what was written before closing still goes out
            if self._out.waiting() > self.config.write_buffer_limit:
                # A peer that does not read would keep a closing transport (and its
                # buffer) for good: drop it at once.
                self._writer.transport.abort()
            else:
                self._writer.close()

    def _peer_not_reading(self, waiting: int) -> None:
        # The SMSC stopped reading (while flooding us, say): drop the link rather
        # than hold its answers in memory without end.
        self.close_reason = f"the SMSC does not read: {waiting} octets waiting to be sent"
        logger.error("SMPP %s; dropping the link", self.close_reason)
        self._out.transport.abort()

    # --- submitting ------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def window_free(self) -> int:
        return max(0, self.config.window - len(self._in_flight))

    async def wait_for_window(self) -> None:
        while self.window_free == 0:
            self._window_open.clear()
            await self._window_open.wait()

    def submit(self, token: Any, **fields: Any) -> int:
        """Send a submit_sm now; its response comes to ``on_submit_response``.

        The sequence number is recorded before the bytes leave, so even an
        immediate response finds its part.
        """
        if self._writer is None or self._writer.is_closing():
            raise LinkError("not bound")
        seq = self._next_sequence()
        # Encoded first: a part whose fields do not fit raises here (FieldError) and
        # leaves nothing in flight.
        data = encode_submit_sm(seq, **fields)
        self._in_flight[seq] = (token, time.monotonic() + self.config.response_timeout)
        self._write(data)
        return seq

    def take_in_flight(self) -> list[Any]:
        """Hand back the tokens of submits that were never answered (link lost)."""
        tokens = [token for token, _ in self._in_flight.values()]
        self._in_flight.clear()
        self._window_open.set()
        return tokens

    # --- answering the SMSC -----------------------------------------------------------

    def respond_deliver(self, sequence: int, status: int = 0) -> None:
        """Answer a deliver_sm (or data_sm) handed to ``on_deliver`` (once each)."""
        if self._intake.answered(sequence):  # a data_sm
            answer = encode_data_sm_resp(sequence, status)
        else:
            answer = encode_deliver_sm_resp(sequence, status)
        if self._writer is not None and not self._writer.is_closing():
            self._write(answer)

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> str:
        """Read until the link ends; returns why it ended."""
        timers = asyncio.ensure_future(self._timers())
        frames = PDUFrames()
        intake = self._intake
        try:
            while True:
                if not intake.room.is_set():
                    # Bounded both ways: while the owner has this many deliver_sm to
                    # answer, read no more (the SMSC waits on TCP, nothing piles up here).
                    await intake.room.wait()
                    self._last_read = time.monotonic()  # our pause, not the SMSC's silence
                # Whole reads, cut into PDUs here: one await per read, not two per PDU.
                try:
                    data = await self._reader.read(READ_SIZE)
                except OSError as exc:
                    return self._ended(f"read failed: {exc}")
                if not data:
                    return self._ended("closed by the SMSC")
                self._last_read = time.monotonic()
                for pdu in frames.feed(data):
                    if pdu[4:8] in INCOMING_IDS:
                        intake.queue.append(pdu)
                    elif not self._dispatch(pdu):
                        return self._ended(self.close_reason or "unbound by the SMSC")
                if frames.broken is not None:
                    length = frames.broken[0]
                    return self._ended(f"read failed: impossible command_length {length}")
                if intake.queue:
                    intake.after_read()
        except asyncio.CancelledError:
            self._ended("stopped")
            raise
        finally:
            timers.cancel()
            intake.drop()  # never answered: the SMSC sends them again
            self._abort()
            for future in self._requests.values():
                if not future.done():
                    future.set_exception(LinkError("link lost"))
            self._requests.clear()

    async def delivers_read(self) -> None:
        """Until every deliver_sm received so far has gone to ``on_deliver``."""
        await self._intake.read_done.wait()

    def _ended(self, reason: str) -> str:
        self.close_reason = self.close_reason or reason
        return self.close_reason

    def _dispatch(self, data: bytes) -> bool:
        """Handle one PDU; False when the session must end.

        Whatever one PDU does to the code handling it, it costs that PDU only:
        the error is logged with the PDU and the session reads on.
        """
        try:
            return self._handle(data)
        except Exception:
            logger.exception("could not handle a PDU from the SMSC: %s", data[:512].hex())
            return True

    def _handle(self, data: bytes) -> bool:
        """One PDU by its command_id; the hot two (submit_sm_resp, deliver_sm) inline."""
        _, command_id, status, seq = unpack_header(data)
        if command_id == SUBMIT_SM_RESP:
            entry = self._in_flight.pop(seq, None)
            if entry is None:
                logger.warning("submit_sm_resp for unknown sequence %d", seq)
                return True
            # Whole, however long: the owner decides what an id it cannot keep means.
            message_id = data[16:].split(b"\0", 1)[0].decode("latin-1") if status == 0 else ""
            self._reopen_window()
            self.on_submit_response(entry[0], status, message_id, seq)
            return True
        if command_id == DELIVER_SM:
            try:
                pdu = decode_deliver_sm(data)
            except PDUFormatError as exc:
                self._refuse_undecodable("deliver_sm", data, seq, exc)
                return True
            self._intake.unanswered += 1
            self.on_deliver(pdu, seq)
            return True
        if command_id == DATA_SM:  # an incoming message or a receipt, as data_sm
            return self._on_data_sm(data, seq)
        if command_id == ENQUIRE_LINK:
            if self._peer_flooding():
                return False
            self._write(pack_header(16, ENQUIRE_LINK_RESP, 0, seq))
            return True
        if command_id == UNBIND:  # unbind from the SMSC: answer, then go
            self._write(encode_pdu("unbind_resp", seq))
            self.close_reason = "unbound by the SMSC"
            return False
        if command_id == GENERIC_NACK:
            self._on_generic_nack(data, status, seq)
            return True
        if command_id & RESPONSE_BIT:
            self._answer_arrived(seq, data)
            return True
        # A request we do not serve: say so, keep the session.
        if self._peer_flooding():
            return False
        logger.warning("unsupported PDU 0x%08X from the SMSC: generic_nack", command_id)
        self._write(encode_pdu("generic_nack", seq, status=ESME_RINVCMDID))
        return True

    def _refuse_undecodable(self, kind: str, data: bytes, seq: int, exc: PDUFormatError) -> None:
        """Refused for good, never published: resending the same bytes cannot help."""
        logger.warning(
            "undecodable %s refused with %s: %s; PDU %s",
            kind,
            status_name(exc.status),
            exc,
            data[:512].hex(),
        )
        respond = encode_data_sm_resp if kind == "data_sm" else encode_deliver_sm_resp
        self._write(respond(seq, exc.status))

    def _on_data_sm(self, data: bytes, seq: int) -> bool:
        try:
            pdu = decode_pdu(data)
        except PDUFormatError as exc:
            self._refuse_undecodable("data_sm", data, seq, exc)
            return True
        self._intake.taken_data_sm(seq)
        self.on_deliver(pdu, seq)
        return True

    def _on_generic_nack(self, data: bytes, status: int, seq: int) -> None:
        """A refusal of a submit (its part answered with the status) or of a request."""
        entry = self._in_flight.pop(seq, None)
        if entry is not None:
            self._reopen_window()
            self.on_submit_response(entry[0], status or ESME_RINVCMDID, "", seq)
        else:
            logger.warning("generic_nack %s for sequence %d", status_name(status), seq)
        self._answer_arrived(seq, data)

    def _answer_arrived(self, seq: int, data: bytes) -> None:
        """The response to one of our own requests (enquire_link, unbind, query_sm)."""
        future = self._requests.pop(seq, None)
        if future is not None and not future.done():
            future.set_result(data)

    def _peer_flooding(self) -> bool:
        """Count one request of the SMSC's; True (and the link given up) past the rate.

        A token bucket of ``peer_request_rate`` a second holding two seconds' worth:
        a burst passes and a flood resets the link.
        """
        if self._peer_requests.take(1):
            return False
        rate = self.config.peer_request_rate
        self.close_reason = f"the SMSC sends requests faster than {rate:g} a second: link reset"
        logger.error("SMPP %s", self.close_reason)
        return True

    def _reopen_window(self) -> None:
        if not self._window_open.is_set():
            self._window_open.set()

    async def _timers(self) -> None:
        """Response timeouts, enquire_link on idle, and dead-link detection."""
        cfg = self.config
        tick = min(0.5, cfg.response_timeout / 4, cfg.enquire_link_interval / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self._expire_submits(now)
            if not self._intake.room.is_set():
                self._last_read = now  # not reading on purpose: the SMSC is not silent
            if now - self._last_read > cfg.link_timeout:
                self.close_reason = f"no answer from the SMSC for {cfg.link_timeout:g} s"
                self._abort()
                return
            idle = now - max(self._last_read, self._out.last_flush)
            if idle > cfg.enquire_link_interval and not self._closing:
                self._write(encode_pdu("enquire_link", self._next_sequence()))

    def _expire_submits(self, now: float) -> None:
        """Submits unanswered past their deadline go back to the owner (status None)."""
        expired = [seq for seq, (_, deadline) in self._in_flight.items() if deadline < now]
        for seq in expired:
            token, _ = self._in_flight.pop(seq)
            self.on_submit_response(token, None, "", seq)
        if expired:
            self._reopen_window()

    async def query(self, message_id: str, source_addr: str = "", ton: int = 0, npi: int = 0):
        """Ask the SMSC about a message (query_sm); returns the decoded query_sm_resp."""
        data = await asyncio.wait_for(
            self._request(
                "query_sm",
                message_id=message_id,
                source_addr=source_addr,
                source_addr_ton=ton,
                source_addr_npi=npi,
            ),
            self.config.response_timeout,
        )
        return decode_pdu(data)

    async def _request(self, command: str, **fields: Any) -> bytes:
        """Send a request and wait for its response PDU (or generic_nack)."""
        seq = self._next_sequence()
        future = asyncio.get_running_loop().create_future()
        self._requests[seq] = future
        self._write(encode_pdu(command, seq, **fields))
        return await future

    async def _request(self, command: str, **fields: Any) -> bytes:
        """Send a request and wait for its response PDU (or generic_nack)."""
        seq = self._next_sequence()
        future = asyncio.get_running_loop().create_future()
        self._requests[seq] = future
        self._write(encode_pdu(command, seq, **fields))
        return await future

    async def drain(self) -> None:
        """Let the socket buffer empty when it is full (back-pressure)."""
        self._out.flush()
        if self._writer is not None and not self._writer.is_closing():
            await self._writer.drain()
