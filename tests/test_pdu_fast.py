"""The hand-written codec of the hot path gives exactly smpplib's bytes and fields."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp_gateway.pdu import (
    PDUFormatError,
    decode_deliver_sm,
    decode_pdu,
    encode_deliver_sm_resp,
    encode_pdu,
    encode_submit_sm,
)

octet = st.integers(0, 255)
address = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=24)

submit_fields = st.fixed_dictionaries(
    {},
    optional={
        "source_addr_ton": octet,
        "source_addr_npi": octet,
        "source_addr": address,
        "dest_addr_ton": octet,
        "dest_addr_npi": octet,
        "destination_addr": address,
        "esm_class": octet,
        "priority_flag": octet,
        "registered_delivery": octet,
        "data_coding": octet,
        "validity_period": st.sampled_from(["", "000001000000000R", "0000010000000000000R"]),
        "short_message": st.binary(max_size=254),
        "sar_msg_ref_num": st.integers(0, 0xFFFF),
        "sar_total_segments": octet,
        "sar_segment_seqnum": octet,
    },
)


@settings(max_examples=400, deadline=None)
@given(fields=submit_fields, sequence=st.integers(1, 0x7FFFFFFF))
def test_submit_sm_bytes_are_smpplibs(fields, sequence):
    assert encode_submit_sm(sequence, **fields) == encode_pdu("submit_sm", sequence, **fields)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=1, max_size=600), fields=submit_fields)
def test_submit_sm_with_message_payload_is_smpplibs(payload, fields):
    fields = {k: v for k, v in fields.items() if k != "short_message"}
    fields["message_payload"] = payload
    assert encode_submit_sm(9, **fields) == encode_pdu("submit_sm", 9, **fields)


def test_submit_sm_refuses_text_in_both_places_as_smpplib_does():
    with pytest.raises(ValueError):
        encode_pdu("submit_sm", 1, short_message=b"a", message_payload=b"b")
    with pytest.raises(ValueError):
        encode_submit_sm(1, short_message=b"a", message_payload=b"b")


def test_submit_sm_with_other_fields_is_left_to_smpplib():
    fields = {"destination_addr": "1", "short_message": b"x", "protocol_id": 7}
    assert encode_submit_sm(3, **fields) == encode_pdu("submit_sm", 3, **fields)
    assert encode_submit_sm(3, **fields)[16 + 9] == 7  # protocol_id went out


@given(sequence=st.integers(1, 0x7FFFFFFF), status=st.sampled_from([0, 0x64, 0x65, 0x08]))
def test_deliver_sm_resp_bytes_are_smpplibs(sequence, status):
    assert encode_deliver_sm_resp(sequence, status) == encode_pdu(
        "deliver_sm_resp", sequence, status=status
    )


FIELDS = (
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
    "user_message_reference",
    "source_network_type",
)

deliver_fields = st.fixed_dictionaries(
    {},
    optional={
        "source_addr_ton": octet,
        "source_addr_npi": octet,
        "source_addr": address,
        "dest_addr_ton": octet,
        "dest_addr_npi": octet,
        "destination_addr": address,
        "esm_class": octet,
        "data_coding": octet,
        "short_message": st.binary(max_size=254),
        "sar_msg_ref_num": st.integers(0, 0xFFFF),
        "sar_total_segments": octet,
        "sar_segment_seqnum": octet,
        "network_error_code": st.binary(min_size=3, max_size=3),
        "message_state": octet,
        "receipted_message_id": st.text("0123456789abcdefABCDEF-", max_size=64),
    },
)


def same_fields(data: bytes) -> None:
    """decode_deliver_sm and decode_pdu agree on every field, or both refuse the PDU."""
    try:
        expected = decode_pdu(data)
    except PDUFormatError:
        with pytest.raises(PDUFormatError):
            decode_deliver_sm(data)
        return
    got = decode_deliver_sm(data)
    for name in FIELDS:
        assert getattr(got, name) == getattr(expected, name), name


@settings(max_examples=400, deadline=None)
@given(fields=deliver_fields, sequence=st.integers(1, 0x7FFFFFFF))
def test_deliver_sm_fields_are_smpplibs(fields, sequence):
    same_fields(encode_pdu("deliver_sm", sequence, **fields))


@settings(max_examples=300, deadline=None)
@given(
    fields=deliver_fields,
    cut=st.integers(0, 80),
    extra=st.binary(max_size=12),
    unknown_tlv=st.booleans(),
)
def test_odd_deliver_sm_are_read_as_smpplib_reads_them(fields, cut, extra, unknown_tlv):
    """Truncated PDUs, trailing junk, unknown and known-but-unhandled TLVs."""
    data = encode_pdu("deliver_sm", 5, **fields)
    body = data[16:]
    if unknown_tlv:
        body += struct.pack(">HH", 0x1403, 2) + b"\x01\x02"  # a vendor TLV: skipped
    body = body[: max(0, len(body) - cut)] + extra
    same_fields(struct.pack(">LLLL", 16 + len(body), 5, 0, 5) + body)


def test_a_receipt_with_only_tlvs_and_a_known_unhandled_tlv():
    data = encode_pdu(
        "deliver_sm",
        8,
        source_addr="123",
        destination_addr="456",
        esm_class=4,
        receipted_message_id="abc",
        message_state=2,
        user_message_reference=77,
    )
    same_fields(data)
    assert decode_deliver_sm(data).user_message_reference == 77
    plain = encode_pdu("deliver_sm", 8, esm_class=4, receipted_message_id="abc", message_state=5)
    decoded = decode_deliver_sm(plain)
    assert type(decoded).__name__ == "DeliverSM" and decoded.message_state == 5
    assert decoded.receipted_message_id == b"abc" and decoded.user_message_reference is None


def test_a_deliver_sm_ending_at_sm_length_has_no_short_message():
    body = b"\0\0\0a\0\0\0b\0" + bytes([4, 0, 0]) + b"\0\0" + bytes([0, 0, 0, 0, 0])
    same_fields(struct.pack(">LLLL", 16 + len(body), 5, 0, 1) + body)
    assert (
        decode_deliver_sm(struct.pack(">LLLL", 16 + len(body), 5, 0, 1) + body).short_message
        is None
    )
