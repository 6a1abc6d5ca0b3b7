"""Cutting a TCP byte stream into whole SMPP PDUs.

Every PDU starts with a 16-octet header (command_length, command_id,
command_status, sequence_number); command_length counts the header too. A
length below 16 or above ``MAX_PDU_LENGTH`` means the stream is desynchronised:
nothing after it can be trusted, and both ends drop the link.

``PDUFrames`` serves the readers that take whatever the socket holds (the
client session's read loop, the simulator's ``data_received``): one call per
read, every whole PDU of it out at once. ``read_pdu`` serves the few places that
wait for one PDU on a stream (the bind, tests).
"""

from __future__ import annotations

import asyncio
import struct

from smpp.command_status import ESME_RX_P_APPN

HEADER = struct.Struct(">LLLL")  # command_length, command_id, command_status, sequence_number
HEADER_SIZE = 16
# The header's pack and unpack as plain functions: a method called on an imported
# name compiles to a bound-method lookup (Python 3.11 emits no LOAD_METHOD for
# imported names), about 40 ns a PDU more on the hot path.
pack_header = HEADER.pack  # (command_length, command_id, command_status, sequence) -> bytes
unpack_header = HEADER.unpack_from  # (data, offset=0) -> the four header fields
MAX_PDU_LENGTH = 64 * 1024  # anything longer is a desynchronised stream
_LENGTH = struct.Struct(">L")


class PDUFormatError(Exception):
    """The peer sent bytes that are not a PDU we can decode (an impossible
    command_length here, a body that does not parse in the codecs).

    ``status`` is what to answer it with (a response's command_status).
    """

    def __init__(
        self, message: str, command_id: int = 0, sequence: int = 0, status: int = ESME_RX_P_APPN
    ):
        super().__init__(message)
        self.command_id = command_id
        self.sequence = sequence
        self.status = status


def peek_header(data: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number)."""
    return HEADER.unpack_from(data)


async def read_pdu(reader: asyncio.StreamReader) -> bytes:
    """Read exactly one PDU's bytes; raises ``asyncio.IncompleteReadError`` at EOF and
    ``PDUFormatError`` on an impossible command_length."""
    header = await reader.readexactly(HEADER_SIZE)
    length = _LENGTH.unpack_from(header)[0]
    if length < HEADER_SIZE or length > MAX_PDU_LENGTH:
        raise PDUFormatError(f"impossible command_length {length}")
    body = await reader.readexactly(length - HEADER_SIZE) if length > HEADER_SIZE else b""
    return header + body


class PDUFrames:
    """The PDUs of a stream, fed one read at a time.

    ``feed`` returns the whole PDUs a read completes, in order, and keeps the
    start of the next one. Each PDU is one slice of the read (a single copy):
    the caller handles them in a loop of its own, with no call per PDU here.
    After an impossible command_length, ``broken`` holds that PDU's header
    (its sequence is what a generic_nack answers) and ``feed`` returns nothing
    more: the PDUs before it are still returned, to be handled first.
    """

    __slots__ = ("_rest", "broken")

    def __init__(self) -> None:
        self._rest = b""
        self.broken: tuple[int, int, int, int] | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """The whole PDUs ``data`` completes (with what earlier reads left over)."""
        if self.broken is not None:
            return []
        if self._rest:
            data = self._rest + data
        pdus = []
        offset = 0
        size = len(data)
        unpack_length = _LENGTH.unpack_from
        while size - offset >= HEADER_SIZE:
            length = unpack_length(data, offset)[0]
            if length < HEADER_SIZE or length > MAX_PDU_LENGTH:
                self.broken = HEADER.unpack_from(data, offset)
                self._rest = b""
                return pdus
            end = offset + length
            if end > size:
                break
            pdus.append(data[offset:end])
            offset = end
        self._rest = data[offset:] if offset < size else b""
        return pdus

    def clear(self) -> None:
        """Forget a partial PDU (the link is gone)."""
        self._rest = b""
