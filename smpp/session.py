"""One SMPP bind over asyncio: the link, the window and the timers.

The session knows PDUs and nothing of the store. It pipelines submit_sm up to
a window, matches each response to its submit by sequence number, answers the
SMSC's enquire_link and unbind, sends its own enquire_link when the link is
idle, and declares the link dead when the SMSC falls silent. What to do with
responses and deliver_sm is the owner's business, through two callbacks; a
data_sm from the SMSC (an incoming message or a receipt, as SMPP 3.4 allows)
goes the same way and is answered with data_sm_resp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smpp.command_status import status_name
from smpp.pdu import (
    HEADER,
    MAX_PDU_LENGTH,
    RESPONSE_BIT,
    PDUFormatError,
    decode_deliver_sm,
    decode_pdu,
    encode_data_sm_resp,
    encode_deliver_sm_resp,
    encode_pdu,
    encode_submit_sm,
    peek_header,
    read_pdu,
)

logger = logging.getLogger(__name__)

MAX_SEQUENCE = 0x7FFFFFFF
DELIVER_SM_ID = (0x00000005).to_bytes(4, "big")
DATA_SM_ID = (0x00000103).to_bytes(4, "big")
READ_SIZE = 256 * 1024  # one read takes every PDU the socket holds, up to this
BIND_TRANSCEIVER_RESP = 0x80000009
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
DELIVER_SM = 0x00000005
DATA_SM = 0x00000103
UNBIND = 0x00000006
GENERIC_NACK = 0x80000000
ESME_RINVBNDSTS = 0x04  # "incorrect bind status": a request before we are bound
ESME_RX_T_APPN = 0x64  # "try again later": the SMSC keeps the deliver_sm
# PDUs the SMSC may send before its bind response (answered or ignored); beyond, the
# link is given up (a peer talking that much without binding us is not an SMSC).
MAX_PDUS_BEFORE_BIND_RESP = 100
# What an SMSC that closes the connection instead of answering a bind usually means.
BIND_UNANSWERED_CAUSES = (
    "the usual causes: a wrong SMPP_PASSWD, SMPP_USER or SMPP_SYSTEM_TYPE, a source "
    "address or an IP address the SMSC does not allow, or TLS on one side only (SMPP_TLS)"
)


@dataclass(frozen=True)
class SessionConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    tls: bool = False
    tls_insecure: bool = False
    tls_ca: str = ""
    window: int = 100
    response_timeout: float = 10.0
    enquire_link_interval: float = 10.0
    link_timeout: float = 30.0
    connect_timeout: float = 10.0
    # A peer that stops reading: once this many octets wait in our write buffer
    # (above what the kernel holds), the link is dropped.
    write_buffer_limit: int = 1024 * 1024
    # Requests the SMSC may send a second beyond deliver_sm (enquire_link, unknown
    # commands) before the link is reset: each costs an answer (a flood).
    peer_request_rate: float = 200.0
    # deliver_sm handed to the owner and not yet answered: beyond, reading stops
    # until answers go out (the SMSC's own window should be far lower).
    max_unanswered_delivers: int = 5000


class LinkError(Exception):
    """The link could not be opened or was lost."""


class BindUnanswered(LinkError):
    """The SMSC closed the connection (or said nothing) instead of answering the bind:
    many do so on bad credentials rather than answer ESME_RBINDFAIL."""


class BindRefused(LinkError):
    def __init__(self, status: int):
        super().__init__(f"bind failed: {status_name(status)} (0x{status:08X})")
        self.status = status


# on_submit_response(token, status, message_id, sequence); status None: no answer in time
SubmitCallback = Callable[[Any, int | None, str, int], None]
# on_deliver(pdu, sequence): the owner must call respond_deliver(sequence, status) later
DeliverCallback = Callable[[Any, int], None]


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
        self._sequence = 0
        # sequence -> (token, deadline) for submits awaiting their response
        self._in_flight: dict[int, tuple[Any, float]] = {}
        # sequence -> future for our own requests (enquire_link, unbind)
        self._requests: dict[int, asyncio.Future] = {}
        self._window_open = asyncio.Event()
        self._window_open.set()
        # PDUs written in one turn of the event loop leave in one write (one syscall).
        self._out: list[bytes] = []
        self._flush_scheduled = False
        # deliver_sm received, read after the responses beside them (see _read_delivers);
        # set when none wait
        self._delivers: deque[bytes] = deque()
        self._delivers_read = asyncio.Event()
        self._delivers_read.set()
        self._last_read = time.monotonic()
        self._last_write = time.monotonic()
        self._closing = False
        self.close_reason = ""
        self._unanswered_delivers = 0
        # Sequences of data_sm handed to the owner: answered with data_sm_resp, not
        # deliver_sm_resp (rare: most SMSCs send deliver_sm; empty, it costs one test).
        self._data_sm: set[int] = set()
        self._deliver_room = asyncio.Event()  # set while under max_unanswered_delivers
        self._deliver_room.set()
        self._peer_requests = 0.0  # the SMSC's requests, decaying by peer_request_rate a second
        self._peer_requests_at = time.monotonic()

    # --- opening and closing --------------------------------------------------------

    async def open(self) -> None:
        """Connect and bind as a transceiver; raises LinkError or BindRefused."""
        cfg = self.config
        ssl_context = _ssl_context(cfg) if cfg.tls else None
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    cfg.host,
                    cfg.port,
                    ssl=ssl_context,
                    server_hostname=cfg.host if cfg.tls else None,
                ),
                cfg.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            raise LinkError(f"connection failed: {exc or type(exc).__name__}") from exc
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seq = self._next_sequence()
        self._write(
            encode_pdu(
                "bind_transceiver",
                seq,
                system_id=cfg.system_id,
                password=cfg.password,
                system_type=cfg.system_type,
                interface_version=0x34,
            )
        )
        try:
            status = await asyncio.wait_for(self._bind_response(seq), cfg.response_timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, PDUFormatError) as exc:
            self._abort()
            if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                what = "the SMSC closed the connection without answering the bind"
            elif isinstance(exc, TimeoutError):
                what = f"no answer to the bind in {cfg.response_timeout:g} s"
            else:
                what = f"no answer to the bind ({exc or type(exc).__name__})"
            raise BindUnanswered(f"bind failed: {what}; {BIND_UNANSWERED_CAUSES}") from exc
        except LinkError:
            self._abort()
            raise
        if status != 0:
            self._abort()
            raise BindRefused(status)
        self._last_read = time.monotonic()

    async def _bind_response(self, sequence: int) -> int:
        """Read until the answer to our bind (sequence ``sequence``); its status.

        An SMSC may speak first: an enquire_link is answered, a deliver_sm is
        answered "try again later" (0x64: we cannot take it before we are bound,
        the SMSC keeps it), another request gets generic_nack ESME_RINVBNDSTS,
        and an unrelated response is ignored. None of them is a bind refusal.
        """
        for _ in range(MAX_PDUS_BEFORE_BIND_RESP):
            data = await read_pdu(self._reader)
            _, command_id, status, seq = peek_header(data)
            if command_id == BIND_TRANSCEIVER_RESP or (
                command_id == GENERIC_NACK and seq == sequence
            ):
                # A refusal without a status says nothing: take it as bad credentials.
                return status if status or command_id == BIND_TRANSCEIVER_RESP else 0x0D
            if command_id & RESPONSE_BIT:
                logger.info("ignoring PDU 0x%08X before the bind response", command_id)
            elif command_id == ENQUIRE_LINK:
                self._write(encode_pdu("enquire_link_resp", seq))
            elif command_id == DELIVER_SM:
                self._write(encode_deliver_sm_resp(seq, ESME_RX_T_APPN))
            elif command_id == DATA_SM:
                self._write(encode_data_sm_resp(seq, ESME_RX_T_APPN))
            elif command_id == UNBIND:
                self._write(encode_pdu("unbind_resp", seq))
                raise LinkError("bind failed: the SMSC unbound before answering the bind")
            else:
                self._write(encode_pdu("generic_nack", seq, status=ESME_RINVBNDSTS))
        raise LinkError(
            f"bind failed: {MAX_PDUS_BEFORE_BIND_RESP} PDUs from the SMSC and no bind response"
        )

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
            self._flush_out()  # what was written before closing still goes out
            if self._writer.transport.get_write_buffer_size() > self.config.write_buffer_limit:
                # A peer that does not read would keep a closing transport (and its
                # buffer) for good: drop it at once.
                self._writer.transport.abort()
            else:
                self._writer.close()

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
        if self._unanswered_delivers > 0:
            self._unanswered_delivers -= 1
            if self._unanswered_delivers < self.config.max_unanswered_delivers:
                self._deliver_room.set()
        if self._data_sm and sequence in self._data_sm:
            self._data_sm.discard(sequence)
            answer = encode_data_sm_resp(sequence, status)
        else:
            answer = encode_deliver_sm_resp(sequence, status)
        if self._writer is not None and not self._writer.is_closing():
            self._write(answer)

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> str:
        """Read until the link ends; returns why it ended."""
        timers = asyncio.ensure_future(self._timers())
        buffer = bytearray()
        try:
            while True:
                if not self._deliver_room.is_set():
                    # Bounded both ways: while the owner has this many deliver_sm to
                    # answer, read no more (the SMSC waits on TCP, nothing piles up here).
                    await self._deliver_room.wait()
                    self._last_read = time.monotonic()  # our pause, not the SMSC's silence
                # Whole reads, cut into PDUs here: one await per read, not two per PDU.
                try:
                    data = await self._reader.read(READ_SIZE)
                except OSError as exc:
                    return self._ended(f"read failed: {exc}")
                if not data:
                    return self._ended("closed by the SMSC")
                self._last_read = time.monotonic()
                buffer += data
                offset, size = 0, len(buffer)
                while size - offset >= 16:
                    length = HEADER.unpack_from(buffer, offset)[0]
                    if length < 16 or length > MAX_PDU_LENGTH:
                        return self._ended(f"read failed: impossible command_length {length}")
                    if size - offset < length:
                        break
                    pdu = bytes(buffer[offset : offset + length])
                    offset += length
                    command = pdu[4:8]
                    if command in (DELIVER_SM_ID, DATA_SM_ID):
                        self._delivers.append(pdu)
                    elif not self._dispatch(pdu):
                        return self._ended(self.close_reason or "unbound by the SMSC")
                del buffer[:offset]
                if self._delivers:
                    if self._delivers_read.is_set():
                        self._delivers_read.clear()
                        asyncio.get_running_loop().call_soon(self._read_delivers)
                    limit = self.config.max_unanswered_delivers
                    if self._unanswered_delivers + len(self._delivers) >= limit:
                        self._deliver_room.clear()  # _read_delivers decides again
        except asyncio.CancelledError:
            self._ended("stopped")
            raise
        finally:
            timers.cancel()
            self._delivers.clear()  # never answered: the SMSC sends them again
            self._delivers_read.set()
            self._abort()
            for future in self._requests.values():
                if not future.done():
                    future.set_exception(LinkError("link lost"))
            self._requests.clear()

    async def delivers_read(self) -> None:
        """Until every deliver_sm received so far has gone to ``on_deliver``."""
        await self._delivers_read.wait()

    def _read_delivers(self) -> None:
        """Read the deliver_sm queued by the last reads, all at once, in a callback
        of its own.

        An SMSC sends up to its window of them at once: a hundred receipts take
        milliseconds to read. The submit_sm_resp beside them were handled as they
        were cut out of the stream, and the window is refilled from them first (the
        feed's wake-up is queued ahead of this callback). In one go, not a few per
        turn of the event loop: with HTTP on the same loop (the embedded set-up)
        each turn can last a request, and slices doubled the receipts' p99.
        """
        delivers = self._delivers
        while delivers:
            self._dispatch(delivers.popleft())
        self._delivers_read.set()
        if self._unanswered_delivers >= self.config.max_unanswered_delivers:
            self._deliver_room.clear()
        else:  # e.g. those read were refused at once: nothing for the owner to answer
            self._deliver_room.set()

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
        _, command_id, status, seq = peek_header(data)
        if command_id == 0x80000004:  # submit_sm_resp: the hot path, parsed by hand
            entry = self._in_flight.pop(seq, None)
            if entry is None:
                logger.warning("submit_sm_resp for unknown sequence %d", seq)
                return True
            # Whole, however long: the owner decides what an id it cannot keep means.
            message_id = data[16:].split(b"\0", 1)[0].decode("latin-1") if status == 0 else ""
            self._reopen_window()
            self.on_submit_response(entry[0], status, message_id, seq)
            return True
        if command_id == 0x00000005:  # deliver_sm
            try:
                pdu = decode_deliver_sm(data)
            except PDUFormatError as exc:
                # Refused for good, never published: resending the same bytes cannot help.
                logger.warning(
                    "undecodable deliver_sm refused with %s: %s; PDU %s",
                    status_name(exc.status),
                    exc,
                    data[:512].hex(),
                )
                self._write(encode_deliver_sm_resp(seq, exc.status))
                return True
            self._unanswered_delivers += 1
            self.on_deliver(pdu, seq)
            return True
        if command_id == DATA_SM:  # an incoming message or a receipt, as data_sm
            try:
                pdu = decode_pdu(data)
            except PDUFormatError as exc:
                logger.warning(
                    "undecodable data_sm refused with %s: %s; PDU %s",
                    status_name(exc.status),
                    exc,
                    data[:512].hex(),
                )
                self._write(encode_data_sm_resp(seq, exc.status))
                return True
            self._data_sm.add(seq)
            self._unanswered_delivers += 1
            self.on_deliver(pdu, seq)
            return True
        if command_id == 0x00000015:  # enquire_link
            if self._peer_flooding():
                return False
            self._write(HEADER.pack(16, ENQUIRE_LINK_RESP, 0, seq))
            return True
        if command_id == 0x00000006:  # unbind from the SMSC: answer, then go
            self._write(encode_pdu("unbind_resp", seq))
            self.close_reason = "unbound by the SMSC"
            return False
        if command_id == 0x80000000:  # generic_nack
            entry = self._in_flight.pop(seq, None)
            if entry is not None:
                self._reopen_window()
                self.on_submit_response(entry[0], status or 0x03, "", seq)
            else:
                logger.warning("generic_nack %s for sequence %d", status_name(status), seq)
            future = self._requests.pop(seq, None)
            if future is not None and not future.done():
                future.set_result(data)
            return True
        if command_id & RESPONSE_BIT:
            future = self._requests.pop(seq, None)
            if future is not None and not future.done():
                future.set_result(data)
            return True
        # A request we do not serve: say so, keep the session.
        if self._peer_flooding():
            return False
        logger.warning("unsupported PDU 0x%08X from the SMSC: generic_nack", command_id)
        self._write(encode_pdu("generic_nack", seq, status=0x03))
        return True

    def _peer_flooding(self) -> bool:
        """Count one request of the SMSC's; True (and the link given up) past the rate.

        A leaky bucket: the count drains at ``peer_request_rate`` a second and may
        hold two seconds' worth, so a burst passes and a flood resets the link.
        """
        rate = self.config.peer_request_rate
        if rate <= 0:
            return False
        now = time.monotonic()
        self._peer_requests = max(0.0, self._peer_requests - (now - self._peer_requests_at) * rate)
        self._peer_requests_at = now
        self._peer_requests += 1
        if self._peer_requests <= 2 * rate:
            return False
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
            expired = [seq for seq, (_, deadline) in self._in_flight.items() if deadline < now]
            for seq in expired:
                token, _ = self._in_flight.pop(seq)
                self.on_submit_response(token, None, "", seq)
            if expired:
                self._reopen_window()
            if not self._deliver_room.is_set():
                self._last_read = now  # not reading on purpose: the SMSC is not silent
            if now - self._last_read > cfg.link_timeout:
                self.close_reason = f"no answer from the SMSC for {cfg.link_timeout:g} s"
                self._abort()
                return
            idle = now - max(self._last_read, self._last_write)
            if idle > cfg.enquire_link_interval and not self._closing:
                seq = self._next_sequence()
                self._last_write = now
                self._write(encode_pdu("enquire_link", seq))

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

    # --- plumbing -------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        self._sequence = self._sequence + 1 if self._sequence < MAX_SEQUENCE else 1
        return self._sequence

    def _write(self, data: bytes) -> None:
        self._last_write = time.monotonic()
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(data)
            waiting = writer.transport.get_write_buffer_size()
            if waiting > self.config.write_buffer_limit:
                # The SMSC stopped reading (while flooding us, say): drop the link
                # rather than hold its answers in memory without end.
                self.close_reason = f"the SMSC does not read: {waiting} octets waiting to be sent"
                logger.error("SMPP %s; dropping the link", self.close_reason)
                writer.transport.abort()

    async def drain(self) -> None:
        """Let the socket buffer empty when it is full (back-pressure)."""
        self._flush_out()
        if self._writer is not None and not self._writer.is_closing():
            await self._writer.drain()


def _ssl_context(cfg: SessionConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cfg.tls_ca or None)
    if cfg.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
