"""Delivery receipt parsing, on the formats real SMSCs send."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smpp.pdu import decode_pdu, encode_pdu
from smpp.receipts import (
    STAT_BY_STATE,
    STATE_BY_STAT,
    ParsedReceipt,
    normalize_smsc_id,
    parse_receipt,
    parse_receipt_date,
)
from smpp.smsc_ids import IdStyle, keys_match, match_key, match_keys, receipt_keys, response_keys


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


STANDARD = (
    b"id:0123456789 sub:001 dlvrd:001 submit date:2401311205 done date:2401311206 "
    b"stat:DELIVRD err:000 text:Hello world"
)


def test_standard_appendix_b_receipt():
    assert parse_receipt(STANDARD) == ParsedReceipt(
        smsc_id="0123456789",
        stat="DELIVRD",
        message_state=2,
        error_code=0,
        sub=1,
        dlvrd=1,
        submit_date=utc(2024, 1, 31, 12, 5),
        done_date=utc(2024, 1, 31, 12, 6),
        text="Hello world",
    )


def test_str_input_is_read_like_bytes():
    assert parse_receipt(STANDARD.decode()) == parse_receipt(STANDARD)


def test_upper_case_keys_and_values():
    r = parse_receipt(
        b"ID:ABCDEF01 SUB:001 DLVRD:000 SUBMIT DATE:2402291530 DONE DATE:2403010001 "
        b"STAT:UNDELIV ERR:011 TEXT:Hi"
    )
    assert (r.smsc_id, r.stat, r.message_state, r.error_code) == ("ABCDEF01", "UNDELIV", 5, 11)
    assert (r.sub, r.dlvrd) == (1, 0)
    assert r.submit_date == utc(2024, 2, 29, 15, 30)
    assert r.done_date == utc(2024, 3, 1, 0, 1)
    assert r.text == "Hi"


def test_mixed_case_keys_and_lower_case_stat():
    r = parse_receipt(
        b"Id:77 Sub:1 Dlvrd:1 Submit Date:2401010000 Done Date:2401010001 Stat:delivrd"
    )
    assert (r.smsc_id, r.stat, r.message_state, r.sub, r.dlvrd) == ("77", "DELIVRD", 2, 1, 1)
    assert r.done_date == utc(2024, 1, 1, 0, 1)


def test_keys_in_another_order():
    r = parse_receipt(
        b"stat:EXPIRED err:027 id:A1B2 done date:2312312359 submit date:2312301200 "
        b"dlvrd:000 sub:001 text:"
    )
    assert r.smsc_id == "A1B2"
    assert (r.stat, r.message_state, r.error_code) == ("EXPIRED", 3, 27)
    assert r.submit_date == utc(2023, 12, 30, 12, 0)
    assert r.done_date == utc(2023, 12, 31, 23, 59)
    assert r.text == ""


def test_missing_dates_and_counts():
    r = parse_receipt(b"id:42 stat:DELIVRD err:000")
    assert r == ParsedReceipt("42", "DELIVRD", 2, 0, None, None, None, None, "")


def test_dates_with_seconds():
    r = parse_receipt(
        b"id:5 sub:001 dlvrd:001 submit date:240131120501 done date:240131120659 stat:DELIVRD"
    )
    assert r.submit_date == utc(2024, 1, 31, 12, 5, 1)
    assert r.done_date == utc(2024, 1, 31, 12, 6, 59)


def test_four_digit_years_with_and_without_seconds():
    r = parse_receipt(b"id:5 submit date:202401311205 done date:20240131120659 stat:DELIVRD")
    assert r.submit_date == utc(2024, 1, 31, 12, 5)
    assert r.done_date == utc(2024, 1, 31, 12, 6, 59)


def test_underscored_date_keys():
    r = parse_receipt(b"id:9 submit_date:2401311205 done_date:2401311206 stat:ACCEPTD err:0")
    assert r.submit_date == utc(2024, 1, 31, 12, 5)
    assert r.done_date == utc(2024, 1, 31, 12, 6)
    assert (r.stat, r.message_state) == ("ACCEPTD", 6)


def test_long_hex_id_with_dashes():
    long_id = "3f2a9c1e-7b4d-4e2f-9a8b-1c2d3e4f5a6b-0011223344556677-8899aabbccd"
    assert len(long_id) == 65
    r = parse_receipt(f"id:{long_id} sub:001 dlvrd:001 stat:DELIVRD err:000 text:x".encode())
    assert r.smsc_id == long_id


def test_id_longer_than_smpp_allows_is_kept_whole():
    r = parse_receipt(b"id:" + b"a" * 80 + b" stat:DELIVRD")
    assert r.smsc_id == "a" * 80  # SMSCs send ids past SMPP's 64: the store keeps them


def test_id_longer_than_the_store_keeps_is_left_unmatched_never_cut():
    # Cut, it could be another part's id; empty, the receipt is kept unmatched.
    r = parse_receipt(b"id:" + b"a" * 300 + b" stat:DELIVRD")
    assert r.smsc_id == "" and r.stat == "DELIVRD"


@pytest.mark.parametrize(
    ("written", "stat", "state"),
    [
        ("DELIVERED", "DELIVRD", 2),
        ("delivered", "DELIVRD", 2),
        ("UNDELIVERABLE", "UNDELIV", 5),
        ("Undeliv", "UNDELIV", 5),
        ("REJECTED", "REJECTD", 8),
        ("rejectd", "REJECTD", 8),
        ("ACCEPTED", "ACCEPTD", 6),
        ("EXPIRED", "EXPIRED", 3),
        ("deleted", "DELETED", 4),
        ("UNKNOWN", "UNKNOWN", 7),
        ("ENROUTE", "ENROUTE", 1),
        ("2", "DELIVRD", 2),
        ("BOGUS", "", None),
        ("", "", None),
    ],
)
def test_stat_spellings(written, stat, state):
    r = parse_receipt(f"id:1 stat:{written} err:000".encode())
    assert (r.stat, r.message_state) == (stat, state)


def test_text_may_hold_colons_and_spaces():
    r = parse_receipt(b"id:1 stat:DELIVRD err:000 text:Code: 1234 at 12:30, ok")
    assert r.text == "Code: 1234 at 12:30, ok"


def test_text_cannot_inject_fields():
    r = parse_receipt(
        b"id:real sub:001 dlvrd:001 stat:DELIVRD err:000 "
        b"text:stat:UNDELIV err:099 id:fake done date:9901010000"
    )
    assert (r.smsc_id, r.stat, r.message_state, r.error_code) == ("real", "DELIVRD", 2, 0)
    assert r.done_date is None
    assert r.text == "stat:UNDELIV err:099 id:fake done date:9901010000"


def test_text_injection_cannot_supply_a_missing_stat():
    r = parse_receipt(b"id:real err:000 Text:stat:DELIVRD")
    assert (r.stat, r.message_state) == ("", None)


def test_unknown_vendor_keys_between_ours_are_ignored():
    r = parse_receipt(b"id:7 imsi:001010123456789 sub:001 msc:3538 stat:DELIVRD err:000")
    assert (r.smsc_id, r.sub, r.stat) == ("7", 1, "DELIVRD")


def test_first_occurrence_of_a_key_wins():
    r = parse_receipt(b"id:first stat:DELIVRD stat:UNDELIV id:second")
    assert (r.smsc_id, r.stat) == ("first", "DELIVRD")


def test_trailing_nul_and_newlines_are_tolerated():
    r = parse_receipt(b"id:1\r\nsub:001\r\ndlvrd:001\r\nstat:DELIVRD\r\nerr:000\r\ntext:\x00")
    assert (r.smsc_id, r.sub, r.dlvrd, r.stat, r.error_code, r.text) == (
        "1",
        1,
        1,
        "DELIVRD",
        0,
        "",
    )


def test_tlv_only_receipt():
    r = parse_receipt(
        b"", receipted_message_id=b"abc123\x00", message_state=5, network_error_code=b"\x03\x00\x22"
    )
    assert r == ParsedReceipt(
        "abc123", "UNDELIV", 5, 0x22, None, None, None, None, "", id_in_tlv=True
    )


def test_tlvs_win_over_text():
    r = parse_receipt(
        STANDARD,
        receipted_message_id="FF00AA",
        message_state=8,
        network_error_code=b"\x01\x01\x02",
    )
    assert (r.smsc_id, r.stat, r.message_state, r.error_code) == ("FF00AA", "REJECTD", 8, 0x0102)
    # fields without a TLV still come from the text
    assert r.submit_date == utc(2024, 1, 31, 12, 5)
    assert r.text == "Hello world"


def test_unusable_tlvs_fall_back_to_text():
    r = parse_receipt(
        STANDARD, receipted_message_id=b"\x00", message_state=0, network_error_code=b"\x03"
    )
    assert (r.smsc_id, r.stat, r.message_state, r.error_code) == ("0123456789", "DELIVRD", 2, 0)


def test_tlvs_as_decoded_by_our_pdu_codec():
    wire = encode_pdu(
        "deliver_sm",
        7,
        source_addr="447700900123",
        destination_addr="SENDER",
        esm_class=0x04,
        short_message=b"id:999 stat:ENROUTE err:000 text:x",
        receipted_message_id="3E7",
        message_state=3,
        network_error_code=b"\x03\x00\x0b",
    )
    pdu = decode_pdu(wire)
    r = parse_receipt(
        pdu.short_message,
        receipted_message_id=pdu.receipted_message_id,
        message_state=pdu.message_state,
        network_error_code=pdu.network_error_code,
    )
    assert (r.smsc_id, r.stat, r.message_state, r.error_code) == ("3E7", "EXPIRED", 3, 11)


@pytest.mark.parametrize(
    ("err", "code"),
    [("000", 0), ("011", 11), ("0x0b", 11), ("0B", 11), ("ff", 255), ("1", 1), ("x?", None)],
)
def test_err_decimal_then_hex(err, code):
    assert parse_receipt(f"id:1 stat:UNDELIV err:{err}".encode()).error_code == code


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\x00",
        b"\xff\xfe\x80 random bytes",
        b"id:",
        b"id: sub: dlvrd: stat: err: text:",
        b"sub:abc dlvrd:-1 err:-5 submit date:99999999999 done date:2413321299",
        b"text:only text here",
        "id:\u00e9\u00e8 stat:DELIVRD".encode(),
        "stat:\u00b2 sub:\u00b2 err:\u00b2",  # str: Unicode digits int() refuses
        b"sub:" + b"9" * 5000 + b" err:" + b"9" * 5000 + b" stat:" + b"1" * 5000,
    ],
)
def test_garbage_never_raises(garbage):
    r = parse_receipt(garbage)
    assert isinstance(r, ParsedReceipt)
    assert (r.sub, r.dlvrd, r.submit_date, r.done_date) == (None, None, None, None)


def test_empty_id_value_does_not_swallow_the_next_key():
    r = parse_receipt(b"id: sub:001 stat:DELIVRD")
    assert (r.smsc_id, r.sub, r.stat) == ("", 1, "DELIVRD")


@given(st.binary(max_size=300))
def test_any_bytes_parse_without_error(data):
    parse_receipt(data, network_error_code=data[:3], receipted_message_id=data[:10])


@given(st.text(max_size=300))
def test_any_text_parses_without_error(text):
    parse_receipt(text, receipted_message_id=text[:10])
    match_keys(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2401311205", utc(2024, 1, 31, 12, 5)),
        ("240131120559", utc(2024, 1, 31, 12, 5, 59)),
        ("202401311205", utc(2024, 1, 31, 12, 5)),
        ("20240131120559", utc(2024, 1, 31, 12, 5, 59)),
        ("991231235959", utc(2099, 12, 31, 23, 59, 59)),
        # twelve digits valid both ways: YYMMDDhhmmss wins
        ("201201011200", utc(2020, 12, 1, 1, 12, 0)),
        ("2024-01-31", None),  # a date without a time is not enough
        ("2402301200", None),  # 30 February
        ("2401312400", None),  # hour 24
        ("24013112", None),
        ("", None),
        ("300001011200", None),  # year 3000
    ],
)
def test_receipt_dates(value, expected):
    parsed = parse_receipt_date(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


def test_state_tables_are_inverse_and_complete():
    assert STAT_BY_STATE == {
        1: "ENROUTE",
        2: "DELIVRD",
        3: "EXPIRED",
        4: "DELETED",
        5: "UNDELIV",
        6: "ACCEPTD",
        7: "UNKNOWN",
        8: "REJECTD",
    }
    assert {v: k for k, v in STATE_BY_STAT.items()} == STAT_BY_STATE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"abc\x00", "abc"),
        (b"  12AB \x00\x00", "12AB"),
        ("\tXYZ\n", "XYZ"),
        (None, ""),
        (b"\xe9", "\u00e9"),
    ],
)
def test_normalize_smsc_id(value, expected):
    assert normalize_smsc_id(value) == expected


@pytest.mark.parametrize(
    ("received", "keys"),
    [
        # decimal in the receipt, hex at submit (and the reverse reading)
        ("12345", ("12345", "3039", "74565")),
        # hex in the receipt, decimal at submit
        ("3039", ("3039", "bdf", "12345")),
        ("ABCDEF", ("abcdef", "11259375")),
        ("abcdef", ("abcdef", "11259375")),
        # leading zeros
        ("0000bdf", ("bdf", "3039")),
        ("000123", ("123", "7b", "291")),
        ("0", ("0",)),
        ("000", ("0",)),
        # neither decimal nor hex: only case and zeros
        ("Msg-0001-XY", ("msg-0001-xy",)),
        ("M1000580", ("m1000580",)),
        ("", ()),
    ],
)
def test_match_keys(received, keys):
    assert match_keys(received) == keys


def test_keys_match_decimal_receipt_to_hex_submit_id_and_back():
    submit_id_hex = format(987654321, "x")
    assert keys_match(submit_id_hex, "987654321")
    assert keys_match(submit_id_hex.upper(), "987654321")
    assert keys_match("987654321", submit_id_hex.upper())


@pytest.mark.parametrize(
    ("response_id", "receipt_id"),
    [
        ("M1000580", "M1000580"),
        ("M1000580", "m1000580"),
        ("0003000516", "3000516"),  # padded response, unpadded receipt (issue 19)
        ("3000516", "0003000516"),
        ("2DC8C4", "3000516"),  # upper-case hex response, decimal receipt
        ("3000516", "002dc8c4"),
        ("6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
    ],
)
def test_keys_match_whichever_side_is_which(response_id, receipt_id):
    assert keys_match(response_id, receipt_id)
    assert keys_match(receipt_id, response_id)


@pytest.mark.parametrize(
    ("response_id", "receipt_id"),
    [("M1000580", "M1000581"), ("M1000580", "1000580"), ("12", "13"), ("", ""), ("a-1", "a-01")],
)
def test_keys_do_not_match_other_ids(response_id, receipt_id):
    assert not keys_match(response_id, receipt_id)


@given(st.text(max_size=80), st.text(max_size=80))
def test_keys_match_is_symmetric(first, second):
    assert keys_match(first, second) == keys_match(second, first)


@given(st.integers(min_value=0, max_value=16**20), st.integers(min_value=0, max_value=12))
def test_an_id_matches_itself_in_every_style(number, zeros):
    for form in (str(number), format(number, "x"), format(number, "X")):
        for shown in (form, "0" * zeros + form):
            assert keys_match(form, shown) and keys_match(shown, form)
            assert match_key(shown) == match_key(form)


def test_keys_of_an_overlong_string_skip_the_numbers():
    digits = "1" * 5000
    assert match_keys(digits) == (digits,)


def test_keys_of_a_long_id_are_cheap_and_exact():
    long_hex = "f" * 64
    assert match_keys(long_hex) == (long_hex, str(16**64 - 1))


# --- a connector's known id style (Kannel's msg-id-type) ---------------------------------


@pytest.mark.parametrize(
    ("style", "response_id", "receipt_id"),
    [
        (IdStyle.SAME, "20", "20"),
        (IdStyle.SAME, "00A1", "a1"),  # case and zeros still aside
        (IdStyle.HEX_IN_RESPONSE, "2DC8C4", "3000516"),
        (IdStyle.HEX_IN_RESPONSE, "14", "20"),
        (IdStyle.HEX_IN_RECEIPT, "3000516", "002dc8c4"),
        (IdStyle.HEX_IN_RECEIPT, "20", "14"),
        (IdStyle.HEX_IN_RESPONSE, "M1000580", "m1000580"),  # not the style's form: its own key
        (IdStyle.HEX_IN_RESPONSE, "²", "²"),  # a digit to str.isdigit, not to int()
        (IdStyle.HEX_IN_RESPONSE, "١٢", "١٢"),  # Arabic-Indic digits: not read as 12
    ],
)
def test_a_known_style_matches_the_form_it_promises(style, response_id, receipt_id):
    assert keys_match(response_id, receipt_id, style)
    # A receipt that came first is kept under its first key and found by the response's.
    assert receipt_keys(receipt_id, style)[0] in response_keys(response_id, style)


@pytest.mark.parametrize(
    ("style", "response_id", "receipt_id"),
    [
        # The small-id ambiguity: "auto" reads 20 as hex 14 too; a known style does not.
        (IdStyle.SAME, "14", "20"),
        (IdStyle.SAME, "20", "14"),
        (IdStyle.HEX_IN_RESPONSE, "20", "20"),
        (IdStyle.HEX_IN_RECEIPT, "20", "20"),
        (IdStyle.HEX_IN_RECEIPT, "14", "20"),
    ],
)
def test_a_known_style_does_not_guess_the_other_base(style, response_id, receipt_id):
    assert keys_match(response_id, receipt_id)  # what "auto" would match
    assert not keys_match(response_id, receipt_id, style)
    assert receipt_keys(receipt_id, style)[0] not in response_keys(response_id, style)


@given(st.sampled_from(list(IdStyle)), st.text(max_size=80), st.text(max_size=80))
def test_a_receipt_kept_first_is_found_exactly_when_the_ids_match(style, response, receipt):
    """The two ways a receipt meets its part agree: part known first (``keys_match``)
    or receipt kept first and found from the response (``response_keys``)."""
    kept = receipt_keys(receipt, style)
    found = bool(kept) and kept[0] in response_keys(response, style)
    if style != IdStyle.AUTO:  # "auto" also finds a kept receipt by its other-base keys
        assert found == keys_match(response, receipt, style)
    assert len(kept) <= 3 and len(receipt_keys("1" * 5000, style)) == 1


def test_the_tlv_id_is_the_responses_form_whatever_the_text_style():
    """SMPP 3.4 defines receipted_message_id as the submit_sm_resp's id; an SMSC with
    hex responses and decimal texts (the simulator's hex_ids) sends the TLV in hex."""
    text = b"id:20 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD"
    from_text = parse_receipt(text)
    from_tlv = parse_receipt(text, receipted_message_id=b"14")
    assert (from_text.id_in_tlv, from_tlv.id_in_tlv) == (False, True)
    style = IdStyle.HEX_IN_RESPONSE
    assert receipt_keys(from_text.smsc_id, style, as_in_response=from_text.id_in_tlv) == ("14",)
    assert receipt_keys(from_tlv.smsc_id, style, as_in_response=from_tlv.id_in_tlv) == ("14",)


def test_every_style_has_a_description_and_the_default_is_auto():
    assert all(style.description for style in IdStyle)
    assert receipt_keys("20") == match_keys("20")
