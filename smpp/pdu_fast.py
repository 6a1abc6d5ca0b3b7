"""The hot path's PDUs by hand: submit_sm out, deliver_sm in, their responses.

Every message is one submit_sm, one deliver_sm receipt and one deliver_sm_resp.
smpplib makes an object of ~50 attributes per PDU, about 25 us to encode a
submit_sm and 30 us to decode a deliver_sm; ``struct`` does it ten times
faster. ``encode_submit_sm``, ``decode_deliver_sm`` and
``encode_deliver_sm_resp`` give exactly smpplib's bytes and fields (the tests
compare them on generated PDUs); anything they do not cover goes to smpplib
(``smpp.pdu``), so smpplib stays the reference codec.
"""

from __future__ import annotations

import struct
from typing import Any

from smpplib import consts, smpp
from smpplib.command import Command

from smpp.command_status import ESME_RINVCMDLEN, ESME_RINVMSGLEN
from smpp.constants import (
    DATA_SM_RESP,
    DELIVER_SM,
    DELIVER_SM_RESP,
    SHORT_MESSAGE_MAX,
    SUBMIT_SM,
    TLV_MESSAGE_PAYLOAD,
    TLV_MESSAGE_STATE,
    TLV_NETWORK_ERROR_CODE,
    TLV_RECEIPTED_MESSAGE_ID,
    TLV_SAR_MSG_REF_NUM,
    TLV_SAR_SEGMENT_SEQNUM,
    TLV_SAR_TOTAL_SEGMENTS,
    TLV_VALUE_MAX,
)
from smpp.framing import PDUFormatError, pack_header, unpack_header
from smpp.pdu import FieldError, FixedSequence, check_c_string, decode_pdu, encode_pdu

_NUL = b"\0"
_B = struct.Struct(">B")
_TLV_HEAD = struct.Struct(">HH")
# submit_sm fields encode_submit_sm knows, with smpplib's C-string limits (NUL included).
_SUBMIT_STRINGS = {"source_addr": 21, "destination_addr": 21, "validity_period": 17}
_SUBMIT_INTS = (
    "source_addr_ton",
    "source_addr_npi",
    "dest_addr_ton",
    "dest_addr_npi",
    "esm_class",
    "priority_flag",
    "registered_delivery",
    "data_coding",
)
_SUBMIT_FIELDS = frozenset(
    (*_SUBMIT_STRINGS, *_SUBMIT_INTS, "short_message", "message_payload")
    + ("sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum")
)


def _int_octet(value: int | None) -> bytes:
    # smpplib writes a falsy integer as one NUL octet, a true one packed to its size (1 here).
    return _B.pack(value) if value else _NUL


def _c_string(name: str, value: str | None, limit: int) -> bytes:
    # smpplib cuts a C-string that reaches its limit silently, and an address it
    # cannot encode fails the whole write: both are refused here, for this PDU only.
    if not value:
        return _NUL
    if len(value) >= limit or not (value.isascii() and value.isprintable()):
        check_c_string(name, value, limit)
    return value.encode("ascii") + _NUL


def encode_submit_sm(sequence: int, status: int = 0, **fields: Any) -> bytes:
    """``encode_pdu("submit_sm", ...)`` for the fields the worker sets, 10x faster.

    Any other field goes to smpplib, so the result is always smpplib's bytes.
    """
    if not fields.keys() <= _SUBMIT_FIELDS:
        return encode_pdu("submit_sm", sequence, status, **fields)
    get = fields.get
    short_message = get("short_message") or b""
    payload = get("message_payload")
    if short_message and payload:
        raise ValueError("`message_payload` can not be used with `short_message`")
    if len(short_message) > SHORT_MESSAGE_MAX:
        raise FieldError(
            f"short_message longer than {SHORT_MESSAGE_MAX} octets ({len(short_message)})",
            "short_message",
        )
    if payload and len(payload) > TLV_VALUE_MAX:
        raise FieldError(
            f"message_payload longer than 65535 octets ({len(payload)})", "message_payload"
        )
    parts = [
        _NUL,  # service_type
        _int_octet(get("source_addr_ton")),
        _int_octet(get("source_addr_npi")),
        _c_string("source_addr", get("source_addr"), 21),
        _int_octet(get("dest_addr_ton")),
        _int_octet(get("dest_addr_npi")),
        _c_string("destination_addr", get("destination_addr"), 21),
        _int_octet(get("esm_class")),
        _NUL,  # protocol_id
        _int_octet(get("priority_flag")),
        _NUL,  # schedule_delivery_time
        _c_string("validity_period", get("validity_period"), 17),
        _int_octet(get("registered_delivery")),
        _NUL,  # replace_if_present_flag
        _int_octet(get("data_coding")),
        _NUL,  # sm_default_msg_id
        _int_octet(len(short_message)),
        short_message,
    ]
    sar_ref = get("sar_msg_ref_num")
    if sar_ref is not None:
        parts.append(struct.pack(">HHH", TLV_SAR_MSG_REF_NUM, 2, sar_ref))
    for tag, name in (
        (TLV_SAR_TOTAL_SEGMENTS, "sar_total_segments"),
        (TLV_SAR_SEGMENT_SEQNUM, "sar_segment_seqnum"),
    ):
        value = get(name)
        if value is not None:
            parts.append(struct.pack(">HHB", tag, 1, value))
    if payload:
        parts.append(_TLV_HEAD.pack(TLV_MESSAGE_PAYLOAD, len(payload)))
        parts.append(payload)
    body = b"".join(parts)
    return pack_header(16 + len(body), SUBMIT_SM, status, sequence) + body


def encode_deliver_sm_resp(sequence: int, status: int = 0) -> bytes:
    """``encode_pdu("deliver_sm_resp", sequence, status=status)``: the header and an empty id."""
    return pack_header(17, DELIVER_SM_RESP, status, sequence) + _NUL


def encode_data_sm_resp(sequence: int, status: int = 0) -> bytes:
    """``encode_pdu("data_sm_resp", sequence, status=status)``: the header and an empty id."""
    return pack_header(17, DATA_SM_RESP, status, sequence) + _NUL


class DeliverSM:
    """A deliver_sm as ``decode_pdu`` returns it, for the fields a gateway reads.

    C-strings are bytes without their NUL, as smpplib gives them; TLVs that
    were not in the PDU are ``None``.
    """

    command = "deliver_sm"
    __slots__ = (
        "length",
        "sequence",
        "status",
        "service_type",
        "source_addr_ton",
        "source_addr_npi",
        "source_addr",
        "dest_addr_ton",
        "dest_addr_npi",
        "destination_addr",
        "esm_class",
        "protocol_id",
        "priority_flag",
        "schedule_delivery_time",
        "validity_period",
        "registered_delivery",
        "replace_if_present_flag",
        "data_coding",
        "sm_default_msg_id",
        "sm_length",
        "short_message",
        "sar_msg_ref_num",
        "sar_total_segments",
        "sar_segment_seqnum",
        "message_payload",
        "network_error_code",
        "message_state",
        "receipted_message_id",
    )

    def __getattr__(self, name: str) -> None:
        # Every other deliver_sm parameter smpplib knows is None here, as it is there
        # (a PDU carrying one of them is decoded by smpplib itself).
        if name in _DELIVER_SM_PARAMS:
            return None
        raise AttributeError(name)


_DELIVER_SM_PARAMS = frozenset(smpp.make_pdu("deliver_sm", client=FixedSequence(0)).params)
# TLVs decode_deliver_sm reads itself: tag -> (name, octets for an integer, 0 for a string).
_DELIVER_TLVS = {
    TLV_SAR_MSG_REF_NUM: ("sar_msg_ref_num", 2),
    TLV_SAR_TOTAL_SEGMENTS: ("sar_total_segments", 1),
    TLV_SAR_SEGMENT_SEQNUM: ("sar_segment_seqnum", 1),
    TLV_MESSAGE_STATE: ("message_state", 1),
    TLV_MESSAGE_PAYLOAD: ("message_payload", 0),
    TLV_NETWORK_ERROR_CODE: ("network_error_code", 0),
    TLV_RECEIPTED_MESSAGE_ID: ("receipted_message_id", -1),  # C-string: without its NUL
}
_KNOWN_TLV_TAGS = frozenset(consts.OPTIONAL_PARAMS.values())


class _Unusual(Exception):
    """A PDU the fast reader leaves to smpplib."""


def _c_string_at(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(0, pos)
    if end < 0:
        raise _Unusual
    return data[pos:end], end + 1


def decode_deliver_sm(data: bytes) -> DeliverSM | Command:
    """``decode_pdu`` for a deliver_sm, about ten times faster on the usual PDU.

    A body that is not as long as its fields say (a C-string without its NUL,
    ``sm_length`` or a TLV running past the end) is refused with
    ``PDUFormatError`` and the status to answer it with: smpplib reads such a
    PDU with the text cut short, and it was published as an incoming message.
    Anything else unusual (a TLV of unexpected length, or one this reader does
    not handle) goes to smpplib, so the fields, or its ``PDUFormatError``, are
    smpplib's.
    """
    try:
        return _decode_deliver_sm(data)
    except (_Unusual, IndexError, struct.error):
        check_deliver_sm_structure(data)
        return decode_pdu(data)


def check_deliver_sm_structure(data: bytes) -> None:
    """Raise ``PDUFormatError`` unless every field of the deliver_sm body lies
    within the PDU (mandatory fields, ``sm_length``, each TLV's header and value)."""
    length, command_id, _, sequence = unpack_header(data)

    def refuse(why: str, status: int = ESME_RINVCMDLEN) -> PDUFormatError:
        return PDUFormatError(f"malformed deliver_sm: {why}", command_id, sequence, status)

    if length != len(data):
        raise refuse(f"command_length {length} but {len(data)} octets")
    pos = 16
    # service_type, then (ton, npi, address) twice, then esm_class, protocol_id,
    # priority_flag and the two times.
    layout = ("c", "1", "1", "c", "1", "1", "c", "1", "1", "1", "c", "c")
    for kind in layout:
        if kind == "c":
            end = data.find(0, pos)
            if end < 0:
                raise refuse("a C-octet string without its NUL")
            pos = end + 1
        else:
            pos += 1
    if pos + 5 > length:
        raise refuse("the body ends before sm_length")
    sm_length = data[pos + 4]
    pos += 5
    if pos + sm_length > length:
        raise refuse(
            f"sm_length {sm_length} runs {pos + sm_length - length} octets past the end",
            ESME_RINVMSGLEN,
        )
    pos += sm_length
    while pos < length:
        if pos + 4 > length:
            raise refuse("a TLV header cut short")
        tag, size = _TLV_HEAD.unpack_from(data, pos)
        pos += 4 + size
        if pos > length:
            raise refuse(f"TLV 0x{tag:04x} runs {pos - length} octets past the end")


def _decode_deliver_sm(data: bytes) -> DeliverSM:
    """The header and the mandatory fields, then ``_read_tlvs``; ``_Unusual`` (or an
    IndexError) for anything smpplib must read."""
    length, command_id, status, sequence = unpack_header(data)
    if command_id != DELIVER_SM or length != len(data):
        raise _Unusual
    pdu = DeliverSM()
    pdu.length = length
    pdu.sequence = sequence
    pdu.status = status
    pdu.service_type, pos = _c_string_at(data, 16)
    pdu.source_addr_ton = data[pos]
    pdu.source_addr_npi = data[pos + 1]
    pdu.source_addr, pos = _c_string_at(data, pos + 2)
    pdu.dest_addr_ton = data[pos]
    pdu.dest_addr_npi = data[pos + 1]
    pdu.destination_addr, pos = _c_string_at(data, pos + 2)
    pdu.esm_class = data[pos]
    pdu.protocol_id = data[pos + 1]
    pdu.priority_flag = data[pos + 2]
    pdu.schedule_delivery_time, pos = _c_string_at(data, pos + 3)
    pdu.validity_period, pos = _c_string_at(data, pos)
    if pos + 5 > length:
        raise _Unusual
    (
        pdu.registered_delivery,
        pdu.replace_if_present_flag,
        pdu.data_coding,
        pdu.sm_default_msg_id,
        sm_length,
    ) = data[pos : pos + 5]
    pdu.sm_length = sm_length
    pos += 5
    end = pos + sm_length
    if end > length:
        raise _Unusual
    # smpplib stops at the end of the body: a PDU that ends at sm_length has no short_message.
    pdu.short_message = data[pos:end] if pos < length else None
    pdu.sar_msg_ref_num = pdu.sar_total_segments = pdu.sar_segment_seqnum = None
    pdu.message_payload = pdu.network_error_code = None
    pdu.message_state = pdu.receipted_message_id = None
    if end < length:
        _read_tlvs(pdu, data, end, length)
    return pdu


def _read_tlvs(pdu: DeliverSM, data: bytes, pos: int, length: int) -> None:
    """The TLVs from ``pos`` to the end into ``pdu``; ``_Unusual`` for smpplib's cases."""
    while pos < length:
        if pos + 4 > length:
            raise _Unusual
        tag, size = _TLV_HEAD.unpack_from(data, pos)
        pos += 4
        value_end = pos + size
        if value_end > length:
            raise _Unusual
        known = _DELIVER_TLVS.get(tag)
        if known is None:
            if tag in _KNOWN_TLV_TAGS:
                raise _Unusual  # smpplib reads it (or refuses the PDU): let it
            pos = value_end  # unknown: skipped, as smpplib does
            continue
        name, octets = known
        if octets > 0:
            if size != octets:
                raise _Unusual
            value = int.from_bytes(data[pos:value_end], "big")
        elif octets < 0:
            if size == 0:
                raise _Unusual
            value = data[pos : value_end - 1]
        else:
            value = data[pos:value_end]
        setattr(pdu, name, value)
        pos = value_end
