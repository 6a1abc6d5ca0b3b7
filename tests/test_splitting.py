"""Splitting outgoing text into SMS parts, and the UDH of incoming parts."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms.encoding import UnencodableCharacter, decode_short_message
from sms.splitting import (
    ConcatInfo,
    PartSpec,
    TooManyParts,
    concat_udh,
    parse_udh,
    split_message,
    with_reference,
)

GSM_BASIC_CHARS = (
    "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡AZÄÖÑÜ§¿azäöñüà\n\r"
)
GSM_EXTENSION_CHARS = "^{}\\[~]|€\x0c"

# Texts for each encoding; gsm_text has many extension characters, ucs2_text many emoji.
gsm_text = st.text(alphabet=st.sampled_from(GSM_BASIC_CHARS + GSM_EXTENSION_CHARS), max_size=700)
ucs2_text = st.text(
    alphabet=st.sampled_from("aé€ж中")
    | st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
    max_size=400,
)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=500)
any_text = st.text(max_size=400)

# Octets of user data per part: (single, per part with 8-bit UDH, with 16-bit UDH).
CAPACITY = {"gsm7": (160, 153, 152), "ucs2": (140, 134, 132), "latin1": (140, 134, 133),
            "raw": (140, 134, 133)}  # fmt: skip
DATA_CODING = {"gsm7": 0, "ucs2": 8, "latin1": 3}


def user_data(part: PartSpec) -> bytes:
    """The text octets of a part, UDH stripped, checking the UDH flag and the UDH agree."""
    if part.esm_class & 0x40:
        info, data = parse_udh(part.short_message)
        assert info is not None
        assert (info.total, info.seq) == (part.total, part.index)
        return data
    return part.short_message


def joined_text(result) -> str:
    octets = b"".join(user_data(part) for part in result.parts)
    if result.encoding == "raw":
        return octets.decode("utf-8")
    text, binary = decode_short_message(octets, result.data_coding)
    assert binary is None
    return text


def check_parts(result, concat):
    """Every invariant of a split: sizes, numbering, flags, no character cut in two."""
    single, per_udh8, per_udh16 = CAPACITY[result.encoding]
    total = len(result.parts)
    assert result.sms_count == total or concat == "payload"
    assert [part.index for part in result.parts] == list(range(1, total + 1))
    for part in result.parts:
        assert part.total == total
        data = user_data(part)
        if part.use_payload:
            assert concat == "payload" and total == 1 and result.sms_count > 1
            assert part.esm_class == 0 and part.sar is None
            continue
        if total == 1:
            assert part.esm_class == 0 and part.sar is None and not part.use_payload
            assert len(data) <= single
            continue
        assert len(data) <= (per_udh16 if concat == "udh16" else per_udh8)
        assert len(part.short_message) <= 140 or result.encoding == "gsm7"
        assert len(part.short_message) <= 160
        if concat in ("udh", "udh16"):
            assert part.esm_class == 0x40 and part.sar is None
        if concat == "sar":
            assert part.esm_class == 0 and part.sar[1:] == (total, part.index)
        if result.encoding == "gsm7":
            assert not data.endswith(b"\x1b"), "GSM escape pair cut"
        if result.encoding == "ucs2":
            assert len(data) % 2 == 0
            assert not 0xD8 <= data[-2] <= 0xDB, "surrogate pair cut"
        if result.encoding == "raw":
            data.decode("utf-8")  # raises when a UTF-8 sequence is cut


@pytest.mark.parametrize("concat", ["udh", "udh16", "sar", "payload"])
@pytest.mark.parametrize(
    ("strategy", "encoding"),
    [
        (gsm_text, "gsm7"),
        (ucs2_text, "ucs2"),
        (latin1_text, "latin1"),
        (any_text, "raw"),
        (gsm_text, "auto"),
        (ucs2_text, "auto"),
        (any_text, "auto"),
    ],
)
@settings(max_examples=60)
@given(data=st.data())
def test_parts_fit_and_join_back_into_the_text(strategy, encoding, concat, data):
    text = data.draw(strategy)
    try:
        result = split_message(text, encoding, concat=concat, reference=data.draw(st.integers(0)))
    except UnencodableCharacter:
        assert encoding in ("gsm7", "latin1")
        return
    check_parts(result, concat)
    assert joined_text(result) == text


@pytest.mark.parametrize("concat", ["udh", "udh16", "sar", "payload"])
@settings(max_examples=100)
@given(
    # Long enough to need parts, in GSM-7, or in UCS-2 when an emoji or 中 is drawn.
    text=st.text(alphabet=st.sampled_from(GSM_BASIC_CHARS + "€中😀"), min_size=150, max_size=700),
    reference=st.integers(0, 200_000),
)
def test_a_reference_written_in_later_gives_the_parts_split_with_it(concat, text, reference):
    """The store checks a text once, then writes its handset's reference into the parts."""
    try:
        without = split_message(text, concat=concat)
    except TooManyParts:
        return
    assert with_reference(without, reference) == split_message(
        text, concat=concat, reference=reference
    )


@settings(max_examples=200)
@given(text=st.text(alphabet=st.sampled_from(GSM_BASIC_CHARS), max_size=2000))
def test_gsm_part_count_arithmetic(text):
    result = split_message(text, max_parts=255)
    n = len(text)
    assert result.units == n and result.unit_name == "septets"
    assert len(result.parts) == (1 if n <= 160 else math.ceil(n / 153))
    udh16 = split_message(text, concat="udh16")
    assert len(udh16.parts) == (1 if n <= 160 else math.ceil(n / 152))


@settings(max_examples=200)
@given(text=st.text(alphabet=st.sampled_from("aé中ж"), max_size=700))
def test_ucs2_part_count_arithmetic(text):
    result = split_message(text, "ucs2")
    n = len(text)
    assert result.units == n and result.unit_name == "code units"
    assert len(result.parts) == (1 if n <= 70 else math.ceil(n / 67))


@settings(max_examples=200)
@given(text=st.text(alphabet=st.sampled_from("aé"), max_size=1000))
def test_latin1_part_count_arithmetic(text):
    result = split_message(text, "latin1")
    n = len(text)
    assert result.units == n and result.unit_name == "octets"
    assert len(result.parts) == (1 if n <= 140 else math.ceil(n / 134))


def test_limits_are_exact():
    assert len(split_message("a" * 160).parts) == 1
    assert len(split_message("a" * 161).parts) == 2
    assert len(split_message("a" * 306).parts) == 2
    assert len(split_message("a" * 307).parts) == 3
    assert len(split_message("€" * 80).parts) == 1  # 160 septets
    assert len(split_message("a" + "€" * 80).parts) == 2
    assert len(split_message("é" * 70, "ucs2").parts) == 1
    assert len(split_message("é" * 71, "ucs2").parts) == 2
    assert len(split_message("😀" * 35).parts) == 1  # 70 code units
    assert len(split_message("😀" * 36).parts) == 2


def test_400_char_gsm_text_is_3_parts_with_the_right_udh():
    result = split_message("x" * 400, reference=0x1234)
    assert (result.encoding, result.data_coding, result.units) == ("gsm7", 0, 400)
    assert [len(part.short_message) for part in result.parts] == [159, 159, 100]
    assert [part.short_message[:6] for part in result.parts] == [
        bytes.fromhex("0500033403" + "01"),
        bytes.fromhex("0500033403" + "02"),
        bytes.fromhex("0500033403" + "03"),
    ]
    assert result.parts[2].short_message[6:] == b"x" * 94
    assert all(part.esm_class == 0x40 for part in result.parts)
    assert result.sms_count == 3


def test_udh16_bytes():
    result = split_message("x" * 200, concat="udh16", reference=0x12345)
    assert [part.short_message[:7] for part in result.parts] == [
        bytes.fromhex("06080423450201"),
        bytes.fromhex("06080423450202"),
    ]
    assert len(result.parts[0].short_message) == 7 + 152
    assert concat_udh(300, 4, 2) == bytes.fromhex("0500032c0402")


def test_sar_mode_has_no_udh():
    result = split_message("x" * 200, concat="sar", reference=70000)
    assert [part.sar for part in result.parts] == [(4464, 2, 1), (4464, 2, 2)]
    assert [part.short_message for part in result.parts] == [b"x" * 153, b"x" * 47]
    assert all(part.esm_class == 0 for part in result.parts)


def test_payload_mode_is_one_pdu_with_the_whole_text():
    result = split_message("é" * 100, "ucs2", concat="payload")
    assert len(result.parts) == 1
    (part,) = result.parts
    assert part.use_payload and part.esm_class == 0 and part.sar is None
    # The whole text, for the message_payload TLV.
    assert part.short_message == ("é" * 100).encode("utf-16-be")
    assert result.sms_count == 2  # what the SMSC will make of it


def test_short_text_is_a_plain_short_message_in_every_mode():
    for concat in ("udh", "udh16", "sar", "payload"):
        result = split_message("hello", concat=concat)
        assert result.parts == [PartSpec(index=1, total=1, short_message=b"hello")]


def test_empty_text_is_one_empty_part():
    result = split_message("")
    assert result.parts == [PartSpec(1, 1, b"")]
    assert (result.units, result.sms_count) == (0, 1)


def test_escape_pair_is_never_split():
    # 152 plain characters then "€": the escape pair would straddle octets 153 and 154.
    result = split_message("a" * 152 + "€" + "b" * 10)
    first, second = (user_data(part) for part in result.parts)
    assert first == b"a" * 152
    assert second == b"\x1b\x65" + b"b" * 10


def test_surrogate_pair_is_never_split():
    result = split_message("a" * 66 + "😀" + "b" * 10)
    first, second = (user_data(part) for part in result.parts)
    assert first == ("a" * 66).encode("utf-16-be")
    assert second == ("😀" + "b" * 10).encode("utf-16-be")


def test_utf8_sequence_is_never_split_in_raw():
    result = split_message("a" * 132 + "😀" + "b" * 10, "raw")
    assert [user_data(part) for part in result.parts] == [
        b"a" * 132,
        ("😀" + "b" * 10).encode(),
    ]


def test_emoji_forces_ucs2_and_says_which_characters():
    result = split_message("Hello 😀 and 🎉 and 😀 again")
    assert (result.encoding, result.data_coding) == ("ucs2", 8)
    assert result.ucs2_forced_by == ["😀", "🎉"]
    assert result.units == 25 + 3  # each emoji takes two code units


def test_backtick_forces_ucs2_and_euro_does_not():
    assert split_message("a`b").encoding == "ucs2"
    euro = split_message("5€")
    assert (euro.encoding, euro.units, euro.ucs2_forced_by) == ("gsm7", 3, [])


def test_latin1_with_euro_names_the_character():
    with pytest.raises(UnencodableCharacter) as caught:
        split_message("Prix: 5€", "latin1")
    assert caught.value.char == "€" and caught.value.position == 7
    assert '"€" (U+20AC)' in str(caught.value)


def test_too_many_parts_says_how_many_are_needed():
    with pytest.raises(TooManyParts) as caught:
        split_message("x" * (153 * 11 + 1), max_parts=10)
    assert (caught.value.needed, caught.value.maximum) == (12, 10)
    assert str(caught.value) == "text needs 12 parts; at most 10 allowed"
    assert len(split_message("x" * 153 * 10, max_parts=10).parts) == 10


def test_too_many_parts_applies_to_payload_mode_and_is_capped_at_255():
    with pytest.raises(TooManyParts) as caught:
        split_message("x" * 2000, concat="payload", max_parts=5)
    assert caught.value.needed == 14
    with pytest.raises(TooManyParts) as caught:
        split_message("x" * (153 * 300), max_parts=1000)
    assert (caught.value.needed, caught.value.maximum) == (300, 255)


def test_gsm7_on_a_latin1_smsc():
    with pytest.raises(ValueError, match="default alphabet"):
        split_message("hi", "gsm7", default_alphabet="latin1")
    result = split_message("hé", default_alphabet="latin1")
    assert (result.encoding, result.data_coding) == ("latin1", 3)


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="concat"):
        split_message("hi", concat="smart")
    with pytest.raises(ValueError, match="max_parts"):
        split_message("hi", max_parts=0)


def test_parse_udh_8bit_and_16bit():
    assert parse_udh(bytes.fromhex("050003cc0302") + b"hi") == (ConcatInfo(0xCC, 3, 2), b"hi")
    assert parse_udh(bytes.fromhex("0608041234ff07") + b"yo") == (ConcatInfo(0x1234, 255, 7), b"yo")


def test_parse_udh_skips_other_elements():
    # A port addressing element (IEI 0x05) before the concatenation element.
    udh = bytes.fromhex("0b0504000000000003010201")
    assert parse_udh(udh + b"x") == (ConcatInfo(1, 2, 1), b"x")
    # Only other elements: the UDH is still stripped.
    assert parse_udh(bytes.fromhex("0605040b8423f0") + b"wap") == (None, b"wap")


def test_parse_udh_ignores_impossible_numbers():
    assert parse_udh(bytes.fromhex("050003010200") + b"x") == (None, b"x")  # seq 0
    assert parse_udh(bytes.fromhex("050003010003") + b"x") == (None, b"x")  # total 0
    assert parse_udh(bytes.fromhex("050003010203") + b"x") == (None, b"x")  # seq > total


def test_parse_udh_gsm_data_is_octets_after_the_header():
    result = split_message("€" * 100)
    info, data = parse_udh(result.parts[0].short_message)
    assert info == ConcatInfo(0, 2, 1) and data == b"\x1b\x65" * 76


@pytest.mark.parametrize(
    "malformed",
    [
        b"",
        bytes.fromhex("05000301"),
        bytes.fromhex("0500"),
        bytes.fromhex("0300030102") + b"x",
        bytes.fromhex("02ff"),
    ],
)
def test_parse_udh_malformed_returns_the_data_unchanged(malformed):
    assert parse_udh(malformed) == (None, malformed)


@given(data=st.binary(max_size=200))
def test_parse_udh_never_raises(data):
    info, rest = parse_udh(data)
    assert data.endswith(rest)
    if info is not None:
        assert 1 <= info.seq <= info.total
