"""SMPP v3.4 PDUs with smpplib as the codec: any PDU, by name.

smpplib's ``Client`` owns a blocking socket and has no window or timers, so we
use only its PDU classes and run the wire ourselves (``smpp.framing`` cuts the
stream, ``smpp.session`` runs the link): ``encode_pdu`` builds the bytes of a
PDU, ``decode_pdu`` reads one.

The three PDUs of the hot path (submit_sm, deliver_sm and deliver_sm_resp) are
built and read by hand in ``smpp.pdu_fast``, to exactly smpplib's bytes and
fields; smpplib stays the reference codec.
"""

from __future__ import annotations

from typing import Any

from smpplib import command_codes, consts, smpp
from smpplib.command import Command

from smpp.command_status import (
    ESME_RINVDSTADR,
    ESME_RINVEXPIRY,
    ESME_RINVMSGLEN,
    ESME_RINVSRCADR,
)
from smpp.framing import PDUFormatError, unpack_header

__all__ = [
    "FieldError",
    "PDUFormatError",
    "STATUS_NAMES",
    "as_text",
    "check_c_string",
    "decode_pdu",
    "encode_pdu",
]


class FieldError(ValueError):
    """A value we were about to send does not fit its SMPP field.

    Raised before any byte is written: the PDU is never sent, cut or garbled.
    ``status`` is the command_status an SMSC answers such a field with (a part
    failed for it reads as if the SMSC had refused it).
    """

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field
        self.status: int | None = _FIELD_STATUS.get(field)


_FIELD_STATUS = {
    "source_addr": ESME_RINVSRCADR,
    "destination_addr": ESME_RINVDSTADR,
    "short_message": ESME_RINVMSGLEN,
    "message_payload": ESME_RINVMSGLEN,
    "validity_period": ESME_RINVEXPIRY,
}
_OCTET_STRING_MAX = 0x10000  # smpplib's limit for a C-string field without one of its own


def check_c_string(name: str, value: str, limit: int) -> None:
    """A C-octet string field of at most ``limit`` octets, its NUL included, of
    printable ASCII: raise ``FieldError`` otherwise (smpplib would cut it silently
    or fail in ``encode("latin-1")`` halfway through a write)."""
    if len(value) >= limit:
        raise FieldError(f"{name} longer than {limit - 1} characters: {value[:80]!r}", name)
    if not (value.isascii() and value.isprintable()):
        raise FieldError(f"{name} is not printable ASCII: {value[:80]!r}", name)


class FixedSequence:
    """Stands in for smpplib's client: gives the PDU the sequence we chose."""

    __slots__ = ("sequence",)

    def __init__(self, sequence: int):
        self.sequence = sequence

    def next_sequence(self) -> int:
        return self.sequence


def encode_pdu(command: str, sequence: int, status: int = 0, **fields: Any) -> bytes:
    """Return the wire bytes of one PDU with the given sequence number.

    C-string fields are ``str`` (printable ASCII, within their length: else
    ``FieldError``); ``short_message`` and other octet strings are ``bytes``.
    """
    pdu = smpp.make_pdu(command, client=FixedSequence(sequence), **fields)
    for name, value in fields.items():
        param = pdu.params.get(name)
        if param is None:
            continue
        if isinstance(value, str) and param.type is str:
            if value:
                check_c_string(name, value, getattr(param, "max", None) or _OCTET_STRING_MAX)
        elif name == "short_message" and value and len(value) > 254:
            raise FieldError(f"short_message longer than 254 octets ({len(value)})", name)
    pdu.sequence = sequence
    pdu.status = status
    return pdu.generate()


def decode_pdu(data: bytes) -> Command:
    """Parse one complete PDU. Unknown TLVs are skipped, not fatal."""
    length, command_id, status, sequence = unpack_header(data)
    name = command_codes.get_command_name(command_id) if _known(command_id) else None
    if name is None:
        raise PDUFormatError(f"unknown command_id 0x{command_id:08x}", command_id, sequence)
    try:
        pdu = smpp.make_pdu(name, allow_unknown_opt_params=True, client=FixedSequence(sequence))
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


def as_text(value: bytes | str | None) -> str:
    """smpplib parses C-strings as bytes; addresses and ids are ASCII."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


# smpplib's own names for the statuses (the tests compare smpp.command_status with them).
STATUS_NAMES: dict[int, str] = {}
for _name in dir(consts):
    if _name.startswith("SMPP_ESME_"):
        STATUS_NAMES.setdefault(getattr(consts, _name), "ESME_" + _name[len("SMPP_ESME_") :])
