"""The hand-written codec of the hot path gives exactly smpplib's bytes and fields."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smpplib import smpp

from smpp.command_status import ESME_RINVCMDLEN, ESME_RINVMSGLEN
from smpp.pdu import FieldError, PDUFormatError, decode_pdu, encode_pdu
from smpp.pdu import FixedSequence as _FixedSequence
from smpp.pdu_fast import (
    check_deliver_sm_structure,
    decode_deliver_sm,
    encode_deliver_sm_resp,
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


def smpplib_bytes(command: str, sequence: int, status: int = 0, **fields) -> bytes:
    """smpplib's own bytes, without our checks of what the fields may carry (so the
    tests can also build the PDUs a hostile SMSC sends)."""
    pdu = smpp.make_pdu(command, client=_FixedSequence(sequence), **fields)
    pdu.sequence = sequence
    pdu.status = status
    return pdu.generate()


def fits(fields: dict) -> bool:
    """Every C-string within its field, printable ASCII (what the encoders accept)."""
    limits = {"source_addr": 20, "destination_addr": 20, "validity_period": 16}
    return all(
        len(fields[name]) <= limit and fields[name].isascii() and fields[name].isprintable()
        for name, limit in limits.items()
        if fields.get(name)
    )


def same_submit_sm(sequence: int, fields: dict) -> None:
    """Our bytes are smpplib's; a field smpplib would cut or fail on is refused by both
    of our encoders (before a byte is written) with FieldError."""
    if fits(fields):
        assert encode_submit_sm(sequence, **fields) == smpplib_bytes(
            "submit_sm", sequence, **fields
        )
        assert encode_pdu("submit_sm", sequence, **fields) == encode_submit_sm(sequence, **fields)
    else:
        with pytest.raises(FieldError):
            encode_submit_sm(sequence, **fields)
        with pytest.raises(FieldError):
            encode_pdu("submit_sm", sequence, **fields)


@settings(max_examples=400, deadline=None)
@given(fields=submit_fields, sequence=st.integers(1, 0x7FFFFFFF))
def test_submit_sm_bytes_are_smpplibs(fields, sequence):
    same_submit_sm(sequence, fields)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=1, max_size=600), fields=submit_fields)
def test_submit_sm_with_message_payload_is_smpplibs(payload, fields):
    fields = {k: v for k, v in fields.items() if k != "short_message"}
    fields["message_payload"] = payload
    same_submit_sm(9, fields)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("destination_addr", "Ω"),
        ("destination_addr", "4479\U0001f600"),
        ("source_addr", "caf\xe9"),
        ("destination_addr", "4" * 21),
        ("destination_addr", "447\x00123"),
        ("source_addr", "a\nb"),
        ("validity_period", "0" * 17),
    ],
)
def test_a_field_it_cannot_carry_never_reaches_the_wire(name, value):
    with pytest.raises(FieldError, match=name):
        encode_submit_sm(1, **{name: value, "short_message": b"x"})
    with pytest.raises(FieldError, match=name):
        encode_pdu("submit_sm", 1, **{name: value, "short_message": b"x"})


def test_other_pdus_check_their_c_strings_too():
    with pytest.raises(FieldError, match="message_id"):
        encode_pdu("query_sm", 1, message_id="a" * 65)  # smpplib would ask about a cut id
    with pytest.raises(FieldError, match="short_message"):
        encode_submit_sm(1, short_message=b"x" * 255)


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
    """decode_deliver_sm and decode_pdu agree on every field, or both refuse the PDU,
    or the body is shorter than its fields say: smpplib reads that (its text cut
    short), decode_deliver_sm refuses it with the status to answer."""
    try:
        expected = decode_pdu(data)
    except PDUFormatError:
        with pytest.raises(PDUFormatError):
            decode_deliver_sm(data)
        return
    try:
        check_deliver_sm_structure(data)
    except PDUFormatError as exc:
        assert exc.status in (ESME_RINVMSGLEN, ESME_RINVCMDLEN)
        with pytest.raises(PDUFormatError) as refused:
            decode_deliver_sm(data)
        assert refused.value.status == exc.status
        return
    got = decode_deliver_sm(data)
    for name in FIELDS:
        assert getattr(got, name) == getattr(expected, name), name


@settings(max_examples=400, deadline=None)
@given(fields=deliver_fields, sequence=st.integers(1, 0x7FFFFFFF))
def test_deliver_sm_fields_are_smpplibs(fields, sequence):
    same_fields(smpplib_bytes("deliver_sm", sequence, **fields))


@settings(max_examples=300, deadline=None)
@given(
    fields=deliver_fields,
    cut=st.integers(0, 80),
    extra=st.binary(max_size=12),
    unknown_tlv=st.booleans(),
)
def test_odd_deliver_sm_are_read_as_smpplib_reads_them(fields, cut, extra, unknown_tlv):
    """Truncated PDUs, trailing junk, unknown and known-but-unhandled TLVs."""
    data = smpplib_bytes("deliver_sm", 5, **fields)
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


def test_a_truncated_deliver_sm_is_refused_never_read_short():
    data = smpplib_bytes(
        "deliver_sm", 4, source_addr="1", destination_addr="2", short_message=b"hello"
    )
    body = data[16:-2]  # sm_length says 5, 3 octets follow
    with pytest.raises(PDUFormatError) as refused:
        decode_deliver_sm(struct.pack(">LLLL", 16 + len(body), 5, 0, 4) + body)
    assert refused.value.status == ESME_RINVMSGLEN and refused.value.sequence == 4
    tlv = (
        data[16:] + struct.pack(">HH", 0x0427, 5) + b"\x02"
    )  # message_state: 5 octets said, 1 sent
    with pytest.raises(PDUFormatError) as refused:
        decode_deliver_sm(struct.pack(">LLLL", 16 + len(tlv), 5, 0, 4) + tlv)
    assert refused.value.status == ESME_RINVCMDLEN
    no_nul = b"\0\1\1" + b"4477" * 8  # source_addr never ends
    with pytest.raises(PDUFormatError):
        decode_deliver_sm(struct.pack(">LLLL", 16 + len(no_nul), 5, 0, 4) + no_nul)
