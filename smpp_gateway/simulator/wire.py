"""The PDUs the simulator handles most, read and built with ``struct`` instead of smpplib.

smpplib makes an object with ~50 attributes for every PDU: about 20
microseconds to decode a submit_sm and 30 to encode a deliver_sm, which made
the simulator, not the gateway, the bottleneck of the benchmark (measured:
80 us of simulator CPU per message with receipts, 17 us with these). The code
here covers only the fields the simulator reads or sets, and the tests check
it against ``smpp.pdu`` (same bytes as ``encode_pdu``, same fields as
``decode_pdu``): smpplib stays the reference codec. A submit_sm this parser
finds odd goes to ``decode_pdu``; rarer PDUs (binds, query_sm) always do.
"""

from __future__ import annotations

import struct

from smpp.constants import (
    ADDRESS_MAX,
    DATA_SM,
    DELIVER_SM,
    MESSAGE_ID_MAX,
    SHORT_MESSAGE_MAX,
    SUBMIT_SM_RESP,
    TLV_MESSAGE_PAYLOAD,
    TLV_MESSAGE_STATE,
    TLV_NETWORK_ERROR_CODE,
    TLV_RECEIPTED_MESSAGE_ID,
    TLV_SAR_MSG_REF_NUM,
    TLV_SAR_SEGMENT_SEQNUM,
    TLV_SAR_TOTAL_SEGMENTS,
)
from smpp.framing import pack_header

__all__ = [
    "SubmitFields",
    "data_sm",
    "deliver_sm",
    "header_only",
    "parse_submit_sm",
    "submit_sm_resp",
    "truncated",
]


def header_only(command_id: int, status: int, sequence: int) -> bytes:
    """A PDU without body: generic_nack, enquire_link(_resp), unbind(_resp), error responses."""
    return pack_header(16, command_id, status, sequence)


def submit_sm_resp(sequence: int, message_id: bytes) -> bytes:
    """A successful submit_sm_resp (an error response is ``header_only``, SMPP 3.4 4.4.2)."""
    return pack_header(17 + len(message_id), SUBMIT_SM_RESP, 0, sequence) + message_id + b"\0"


def _c_string(value: str, limit: int, name: str) -> bytes:
    data = value.encode("ascii")
    if len(data) > limit:  # smpplib would cut it silently; we never send a cut address
        raise ValueError(f"{name} longer than {limit} octets: {value!r}")
    return data + b"\0"


def _addresses(
    source_addr: str,
    destination_addr: str,
    source_addr_ton: int,
    source_addr_npi: int,
    dest_addr_ton: int,
    dest_addr_npi: int,
    address_limit: int,
) -> bytes:
    """service_type (empty), then TON, NPI and address of the source and the destination."""
    return b"".join(
        (
            b"\0",  # service_type
            bytes((source_addr_ton, source_addr_npi)),
            _c_string(source_addr, address_limit, "source_addr"),
            bytes((dest_addr_ton, dest_addr_npi)),
            _c_string(destination_addr, address_limit, "destination_addr"),
        )
    )


def _sar_tlvs(reference: int | None, total: int | None, seqnum: int | None) -> list[bytes]:
    """The three SAR TLVs (those given), in smpplib's order."""
    tlvs = []
    if reference is not None:
        tlvs.append(struct.pack(">HHH", TLV_SAR_MSG_REF_NUM, 2, reference))
    if total is not None:
        tlvs.append(struct.pack(">HHB", TLV_SAR_TOTAL_SEGMENTS, 1, total))
    if seqnum is not None:
        tlvs.append(struct.pack(">HHB", TLV_SAR_SEGMENT_SEQNUM, 1, seqnum))
    return tlvs


def _octets_tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def _receipted_message_id_tlv(message_id: str, limit: int) -> bytes:
    return _octets_tlv(
        TLV_RECEIPTED_MESSAGE_ID, _c_string(message_id, limit, "receipted_message_id")
    )


def deliver_sm(
    sequence: int,
    *,
    source_addr: str,
    destination_addr: str,
    source_addr_ton: int = 0,
    source_addr_npi: int = 0,
    dest_addr_ton: int = 0,
    dest_addr_npi: int = 0,
    esm_class: int = 0,
    data_coding: int = 0,
    short_message: bytes = b"",
    message_payload: bytes | None = None,
    sar_msg_ref_num: int | None = None,
    sar_total_segments: int | None = None,
    sar_segment_seqnum: int | None = None,
    network_error_code: bytes | None = None,
    message_state: int | None = None,
    receipted_message_id: str | None = None,
    address_limit: int = ADDRESS_MAX,
    message_id_limit: int = MESSAGE_ID_MAX,
) -> bytes:
    """A deliver_sm; TLVs in smpplib's order so the bytes match ``encode_pdu``.

    The limits are SMPP's; a fault mode raises them to send what SMPP forbids.
    """
    if len(short_message) > SHORT_MESSAGE_MAX:
        raise ValueError("short_message longer than 254 octets: use message_payload")
    if short_message and message_payload:
        raise ValueError("short_message and message_payload exclude each other")
    parts = [
        _addresses(
            source_addr,
            destination_addr,
            source_addr_ton,
            source_addr_npi,
            dest_addr_ton,
            dest_addr_npi,
            address_limit,
        ),
        # esm_class, protocol_id, priority_flag, schedule_delivery_time, validity_period,
        # registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id
        bytes((esm_class, 0, 0, 0, 0, 0, 0, data_coding, 0, len(short_message))),
        short_message,
        *_sar_tlvs(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum),
    ]
    if message_payload:
        parts.append(_octets_tlv(TLV_MESSAGE_PAYLOAD, message_payload))
    if network_error_code:
        parts.append(_octets_tlv(TLV_NETWORK_ERROR_CODE, network_error_code))
    if message_state is not None:
        parts.append(struct.pack(">HHB", TLV_MESSAGE_STATE, 1, message_state))
    if receipted_message_id:
        parts.append(_receipted_message_id_tlv(receipted_message_id, message_id_limit))
    body = b"".join(parts)
    return pack_header(16 + len(body), DELIVER_SM, 0, sequence) + body


def data_sm(
    sequence: int,
    *,
    source_addr: str,
    destination_addr: str,
    source_addr_ton: int = 0,
    source_addr_npi: int = 0,
    dest_addr_ton: int = 0,
    dest_addr_npi: int = 0,
    esm_class: int = 0,
    data_coding: int = 0,
    short_message: bytes = b"",
    message_payload: bytes | None = None,
    sar_msg_ref_num: int | None = None,
    sar_total_segments: int | None = None,
    sar_segment_seqnum: int | None = None,
    network_error_code: bytes | None = None,
    message_state: int | None = None,
    receipted_message_id: str | None = None,
    address_limit: int = ADDRESS_MAX,
    message_id_limit: int = MESSAGE_ID_MAX,
) -> bytes:
    """The same message as ``deliver_sm`` would carry, as a data_sm (SMPP 3.4 4.7):
    no short_message, the text in ``message_payload``; TLVs in smpplib's order."""
    if short_message and message_payload:
        raise ValueError("short_message and message_payload exclude each other")
    payload = message_payload or short_message
    parts = [
        _addresses(
            source_addr,
            destination_addr,
            source_addr_ton,
            source_addr_npi,
            dest_addr_ton,
            dest_addr_npi,
            address_limit,
        ),
        bytes((esm_class, 0, data_coding)),  # esm_class, registered_delivery, data_coding
        *_sar_tlvs(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum),
    ]
    if payload:
        parts.append(_octets_tlv(TLV_MESSAGE_PAYLOAD, payload))
    if receipted_message_id:
        parts.append(_receipted_message_id_tlv(receipted_message_id, message_id_limit))
    if message_state is not None:
        parts.append(struct.pack(">HHB", TLV_MESSAGE_STATE, 1, message_state))
    if network_error_code:
        parts.append(_octets_tlv(TLV_NETWORK_ERROR_CODE, network_error_code))
    body = b"".join(parts)
    return pack_header(16 + len(body), DATA_SM, 0, sequence) + body


def truncated(pdu: bytes, how: int) -> bytes:
    """``pdu`` (a deliver_sm) with its body cut short, the header's length fixed:
    ``how`` 0: the last three octets of short_message missing (sm_length runs past
    the end); 1: a message_payload TLV saying 200 octets, carrying 10."""
    if how == 0:
        body = pdu[16:-3]
    else:
        body = pdu[16:] + struct.pack(">HH", TLV_MESSAGE_PAYLOAD, 200) + b"cut short!"
    return pack_header(16 + len(body), DELIVER_SM, 0, 0) + body


class SubmitFields:
    """The submit_sm fields the simulator reads, named as smpplib names them."""

    __slots__ = (
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
        "short_message",
        "message_payload",
        "sar_msg_ref_num",
        "sar_total_segments",
        "sar_segment_seqnum",
    )


def _c_string_at(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.index(0, pos)  # ValueError when the NUL is missing
    return data[pos:end], end + 1


def parse_submit_sm(pdu: bytes) -> SubmitFields:
    """Read a whole submit_sm PDU (header included) about ten times faster than smpplib.

    Raises ``ValueError`` or ``IndexError`` on anything unusual (a missing NUL,
    a truncated body, a TLV running past the end); the caller then falls back
    to ``decode_pdu``, so odd PDUs get exactly smpplib's treatment. Unknown
    TLVs are skipped, as ``decode_pdu`` does.
    """
    fields = SubmitFields()
    fields.service_type, pos = _c_string_at(pdu, 16)
    fields.source_addr_ton = pdu[pos]
    fields.source_addr_npi = pdu[pos + 1]
    fields.source_addr, pos = _c_string_at(pdu, pos + 2)
    fields.dest_addr_ton = pdu[pos]
    fields.dest_addr_npi = pdu[pos + 1]
    fields.destination_addr, pos = _c_string_at(pdu, pos + 2)
    fields.esm_class = pdu[pos]
    fields.protocol_id = pdu[pos + 1]
    fields.priority_flag = pdu[pos + 2]
    fields.schedule_delivery_time, pos = _c_string_at(pdu, pos + 3)
    fields.validity_period, pos = _c_string_at(pdu, pos)
    (
        fields.registered_delivery,
        fields.replace_if_present_flag,
        fields.data_coding,
        fields.sm_default_msg_id,
        sm_length,
    ) = pdu[pos : pos + 5]
    pos += 5
    end = pos + sm_length
    if end > len(pdu):
        raise ValueError("short_message runs past the end of the PDU")
    fields.short_message = pdu[pos:end]
    fields.message_payload = None
    fields.sar_msg_ref_num = fields.sar_total_segments = fields.sar_segment_seqnum = None
    pos = end
    size = len(pdu)
    while pos < size:
        tag, length = struct.unpack_from(">HH", pdu, pos)
        pos += 4
        value_end = pos + length
        if value_end > size:
            raise ValueError(f"TLV 0x{tag:04x} runs past the end of the PDU")
        if tag == TLV_SAR_MSG_REF_NUM:
            fields.sar_msg_ref_num = int.from_bytes(pdu[pos:value_end], "big")
        elif tag == TLV_SAR_TOTAL_SEGMENTS:
            fields.sar_total_segments = int.from_bytes(pdu[pos:value_end], "big")
        elif tag == TLV_SAR_SEGMENT_SEQNUM:
            fields.sar_segment_seqnum = int.from_bytes(pdu[pos:value_end], "big")
        elif tag == TLV_MESSAGE_PAYLOAD:
            fields.message_payload = pdu[pos:value_end]
        pos = value_end
    return fields
