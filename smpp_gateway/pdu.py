"""SMPP v3.4 PDUs on an asyncio stream, with smpplib as the codec.

smpplib's ``Client`` owns a blocking socket and has no window or timers, so we
use only its PDU classes and run the wire ourselves: ``read_pdu`` reads one
whole PDU from a stream (never half of one), ``encode_pdu`` builds the bytes.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from smpplib import command_codes, consts, smpp
from smpplib.command import Command

HEADER = struct.Struct(">LLLL")
MAX_PDU_LENGTH = 64 * 1024  # anything longer is a desynchronised stream


class PDUFormatError(Exception):
    """The peer sent bytes that are not a PDU we can decode."""

    def __init__(self, message: str, command_id: int = 0, sequence: int = 0):
        super().__init__(message)
        self.command_id = command_id
        self.sequence = sequence


class _FixedSequence:
    """Stands in for smpplib's client: gives the PDU the sequence we chose."""

    __slots__ = ("sequence",)

    def __init__(self, sequence: int):
        self.sequence = sequence

    def next_sequence(self) -> int:
        return self.sequence


def encode_pdu(command: str, sequence: int, status: int = 0, **fields: Any) -> bytes:
    """Return the wire bytes of one PDU with the given sequence number.

    C-string fields are ``str`` (ASCII); ``short_message`` and other octet
    strings are ``bytes``.
    """
    pdu = smpp.make_pdu(command, client=_FixedSequence(sequence), **fields)
    pdu.sequence = sequence
    pdu.status = status
    return pdu.generate()


def decode_pdu(data: bytes) -> Command:
    """Parse one complete PDU. Unknown TLVs are skipped, not fatal."""
    length, command_id, status, sequence = HEADER.unpack_from(data)
    name = command_codes.get_command_name(command_id) if _known(command_id) else None
    if name is None:
        raise PDUFormatError(f"unknown command_id 0x{command_id:08x}", command_id, sequence)
    try:
        pdu = smpp.make_pdu(name, allow_unknown_opt_params=True, client=_FixedSequence(sequence))
        pdu.parse(data)
    except Exception as exc:  # smpplib raises many kinds on bad input
        raise PDUFormatError(f"malformed {name}: {exc}", command_id, sequence) from exc
    return pdu


def _known(command_id: int) -> bool:
    try:
        command_codes.get_command_name(command_id)
    except Exception:
        return False
    return True


async def read_pdu(reader: asyncio.StreamReader) -> bytes:
    """Read exactly one PDU's bytes; raises ``asyncio.IncompleteReadError`` at EOF."""
    header = await reader.readexactly(16)
    length = struct.unpack_from(">L", header)[0]
    if length < 16 or length > MAX_PDU_LENGTH:
        raise PDUFormatError(f"impossible command_length {length}")
    body = await reader.readexactly(length - 16) if length > 16 else b""
    return header + body


def peek_header(data: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number)."""
    return HEADER.unpack_from(data)


def as_text(value: bytes | str | None) -> str:
    """smpplib parses C-strings as bytes; addresses and ids are ASCII."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


GENERIC_NACK = command_codes.get_command_code("generic_nack")
RESPONSE_BIT = 0x80000000
STATUS_NAMES: dict[int, str] = {}
for _name in dir(consts):
    if _name.startswith("SMPP_ESME_"):
        STATUS_NAMES.setdefault(getattr(consts, _name), "ESME_" + _name[len("SMPP_ESME_") :])
