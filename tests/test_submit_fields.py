"""What a stored part becomes on the wire."""

from datetime import UTC, datetime, timedelta

from messaging.store import ClaimedPart
from smpp.pdu import decode_pdu, encode_pdu
from smpp_gateway.submit_fields import relative_validity, submit_fields

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def part(**changes) -> ClaimedPart:
    values = dict(
        part_id=1,
        message_id=1,
        index=1,
        src="bart",
        src_ton=5,
        src_npi=0,
        dst="lisa",
        dst_ton=1,
        dst_npi=1,
        data_coding=8,
        esm_class=0x40,
        short_message=b"\x05\x00\x03\x01\x02\x01hi",
        sar=None,
        use_payload=False,
        register="final",
        priority=2,
        validity_until=None,
        attempts=1,
    )
    values.update(changes)
    return ClaimedPart(**values)


def test_relative_validity():
    assert relative_validity(NOW + timedelta(hours=1, seconds=5), NOW) == "000000010005000R"
    assert relative_validity(NOW + timedelta(days=400), NOW) == "010105000000000R"
    assert relative_validity(NOW - timedelta(1), NOW) == "000000000001000R"


def test_fields_survive_the_codec():
    fields = submit_fields(part(validity_until=NOW + timedelta(minutes=2)), now=NOW)
    pdu = decode_pdu(encode_pdu("submit_sm", 9, **fields))
    assert (pdu.source_addr, pdu.destination_addr) == (b"bart", b"lisa")
    assert (pdu.source_addr_ton, pdu.dest_addr_ton, pdu.dest_addr_npi) == (5, 1, 1)
    assert (pdu.esm_class, pdu.data_coding, pdu.priority_flag) == (0x40, 8, 2)
    assert pdu.registered_delivery == 1 and pdu.validity_period == b"000000000200000R"
    assert pdu.short_message == b"\x05\x00\x03\x01\x02\x01hi"


def test_failure_only_receipts_and_sar_and_payload():
    fields = submit_fields(part(register="failure", sar=(7, 2, 1)), now=NOW)
    assert fields["registered_delivery"] == 2
    assert (
        fields["sar_msg_ref_num"],
        fields["sar_total_segments"],
        fields["sar_segment_seqnum"],
    ) == (7, 2, 1)
    fields = submit_fields(part(use_payload=True, register=""), now=NOW)
    assert fields["message_payload"] and "short_message" not in fields
    assert fields["registered_delivery"] == 0
