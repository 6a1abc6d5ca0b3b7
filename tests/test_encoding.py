"""Encoding rules: choosing an encoding, encoding outgoing text, decoding incoming bytes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms.encoding import (
    ENCODINGS,
    UnencodableCharacter,
    alphabet_carries,
    alphabet_of,
    data_coding_for,
    decode_gsm7,
    decode_short_message,
    encode_text,
    is_gsm7,
    resolve_encoding,
)

# The whole GSM 03.38 repertoire, from TS 23.038 (basic table in code order, then extension).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {"\x0c": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C,
                 "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}  # fmt: skip
GSM_CHARS = GSM_BASIC.replace("\x1b", "") + "".join(GSM_EXTENSION)

CONCRETE = ("gsm7", "ucs2", "latin1", "raw")
TEXT_CODINGS = {"gsm7": 0, "ucs2": 8, "latin1": 3}


def test_encodings_in_the_order_of_the_error_text():
    assert ", ".join(ENCODINGS) == "auto, gsm7, ucs2, latin1, raw"


def test_gsm7_basic_table_is_exactly_the_standard_one():
    assert len(GSM_BASIC) == 128
    for code, char in enumerate(GSM_BASIC):
        if code != 0x1B:
            assert encode_text(char, "gsm7") == bytes([code]), (code, char)


def test_gsm7_extension_table_is_escape_plus_code():
    for char, code in GSM_EXTENSION.items():
        assert encode_text(char, "gsm7") == bytes([0x1B, code])


def test_gsm7_repertoire_has_nothing_else():
    for code_point in range(0x3000):
        char = chr(code_point)
        assert is_gsm7(char) == (char in GSM_CHARS), hex(code_point)


def test_gsm7_known_pitfalls():
    assert encode_text("§", "gsm7") == b"\x5f"
    assert encode_text("@", "gsm7") == b"\x00"
    assert encode_text("€", "gsm7") == b"\x1b\x65"
    assert encode_text("\x0c", "gsm7") == b"\x1b\x0a"
    with pytest.raises(UnencodableCharacter):
        encode_text("`", "gsm7")
    # U+001B would be read as the start of an escape pair: it is not a GSM character.
    with pytest.raises(UnencodableCharacter):
        encode_text("\x1b", "gsm7")


def test_ucs2_is_utf16be_with_surrogate_pairs():
    assert encode_text("aé", "ucs2") == b"\x00a\x00\xe9"
    assert encode_text("😀", "ucs2") == b"\xd8\x3d\xde\x00"


def test_latin1_and_raw():
    assert encode_text("é", "latin1") == b"\xe9"
    assert encode_text("é€", "raw") == "é€".encode()


def test_unencodable_character_names_it():
    with pytest.raises(UnencodableCharacter) as caught:
        encode_text("Prix €", "latin1")
    error = caught.value
    assert (error.char, error.position, error.encoding) == ("€", 5, "latin1")
    assert str(error) == 'character "€" (U+20AC) at position 5 cannot be encoded in latin1'
    assert isinstance(error, ValueError)


def test_unencodable_character_first_one_is_reported():
    with pytest.raises(UnencodableCharacter) as caught:
        encode_text("abcé`", "gsm7")
    assert str(caught.value) == 'character "`" (U+0060) at position 4 cannot be encoded in gsm7'


def test_unencodable_unprintable_and_astral_characters_show_code_points():
    with pytest.raises(UnencodableCharacter) as caught:
        encode_text("a\x1bb", "gsm7")
    assert str(caught.value) == "character U+001B at position 1 cannot be encoded in gsm7"
    with pytest.raises(UnencodableCharacter) as caught:
        encode_text("hi 😀", "latin1")
    assert str(caught.value).startswith('character "😀" (U+1F600) at position 3')


def test_lone_surrogate_cannot_be_encoded_in_ucs2_or_raw():
    for encoding in ("ucs2", "raw"):
        with pytest.raises(UnencodableCharacter) as caught:
            encode_text("ab\ud800c", encoding)
        assert (caught.value.char, caught.value.position) == ("\ud800", 2)
        assert "U+D800" in str(caught.value)


def test_encode_text_needs_a_concrete_encoding():
    for name in ("auto", "utf8"):
        with pytest.raises(ValueError, match="not a concrete encoding"):
            encode_text("a", name)


def test_auto_is_gsm7_when_everything_fits_even_the_extension_table():
    assert resolve_encoding("Prix: 5€ [promo] §", "auto") == ("gsm7", [])
    assert resolve_encoding("", "auto") == ("gsm7", [])


def test_auto_is_ucs2_and_lists_the_characters_that_forced_it():
    assert resolve_encoding("hé 😀 ok `😀 ñ 😀", "auto") == ("ucs2", ["😀", "`"])
    assert resolve_encoding("`", "auto") == ("ucs2", ["`"])


def test_auto_on_a_latin1_smsc_tries_latin1():
    assert resolve_encoding("çà", "auto", default_alphabet="latin1") == ("latin1", [])
    assert resolve_encoding("ç€", "auto", default_alphabet="latin1") == ("ucs2", ["€"])


def test_explicit_encodings_are_kept():
    for name in CONCRETE:
        assert resolve_encoding("😀", name) == (name, [])


def test_unknown_encoding_lists_the_supported_ones():
    with pytest.raises(ValueError, match="supported: auto, gsm7, ucs2, latin1, raw"):
        resolve_encoding("a", "utf8")


def test_data_coding():
    assert [data_coding_for(name) for name in CONCRETE] == [0, 8, 3, 0]
    assert data_coding_for("latin1", "latin1") == 3
    assert data_coding_for("ucs2", "latin1") == 8
    with pytest.raises(ValueError, match="default alphabet .* is latin1"):
        data_coding_for("gsm7", "latin1")
    with pytest.raises(ValueError, match="unknown default alphabet"):
        data_coding_for("ucs2", "ebcdic")
    with pytest.raises(ValueError):
        data_coding_for("auto")


def test_which_encodings_an_alphabet_carries():
    assert [alphabet_carries("gsm7", name) for name in CONCRETE] == [True] * 4
    assert [alphabet_carries("latin1", name) for name in CONCRETE] == [False, True, True, True]
    assert not alphabet_carries("ebcdic", "ucs2")


@pytest.mark.parametrize("encoding", CONCRETE)
@given(text=st.text())
def test_encode_then_decode_gives_the_text_back(encoding, text):
    try:
        encoded = encode_text(text, encoding)
    except UnencodableCharacter as error:
        assert text[error.position] == error.char
        encode_text(text[: error.position], encoding)  # it is the first one
        return
    if encoding == "raw":
        assert encoded.decode("utf-8") == text
    else:
        assert decode_short_message(encoded, TEXT_CODINGS[encoding]) == (text, None)


@given(text=st.text(alphabet=st.sampled_from(GSM_CHARS)))
def test_gsm_text_roundtrips_and_counts_septets(text):
    encoded = encode_text(text, "gsm7")
    assert len(encoded) == len(text) + sum(c in GSM_EXTENSION for c in text)
    assert decode_short_message(encoded, 0) == (text, None)


@given(text=st.text())
def test_auto_always_picks_something_that_encodes(text):
    encoding, forced_by = resolve_encoding(text, "auto")
    encoded = encode_text(text, encoding)
    assert decode_short_message(encoded, TEXT_CODINGS[encoding])[0] == text
    assert (encoding == "gsm7") == (forced_by == [])
    assert forced_by == list(dict.fromkeys(c for c in text if not is_gsm7(c)))


def test_decode_data_codings():
    assert decode_short_message(b"Hi\x00", 0) == ("Hi@", None)
    assert decode_short_message(b"\xe9", 0, default_alphabet="latin1") == ("é", None)
    assert decode_short_message(b"plain", 1) == ("plain", None)
    assert decode_short_message(b"\xe9t\xe9", 3) == ("été", None)
    assert decode_short_message("😀a".encode("utf-16-be"), 8) == ("😀a", None)
    assert decode_short_message(b"\x01\xff", 2) == (None, "01ff")
    assert decode_short_message(b"\x01\xff", 4) == (None, "01ff")
    assert decode_short_message("Жук".encode("iso8859_5"), 6) == ("Жук", None)


def test_decode_gsm_dcs_groups():
    assert alphabet_of(0x10) == "gsm7"  # class 0 (flash), GSM
    assert alphabet_of(0x18) == "ucs2"  # class 0, UCS-2
    assert alphabet_of(0x15) == "binary"  # class 1, 8-bit
    assert alphabet_of(0x30) == "binary"  # compressed
    assert alphabet_of(0xC0) == "gsm7"
    assert alphabet_of(0xE0) == "ucs2"
    assert alphabet_of(0xF0) == "gsm7"
    assert alphabet_of(0xF1) == "gsm7"
    assert alphabet_of(0xF4) == "binary"
    assert alphabet_of(0xF6) == "binary"
    assert alphabet_of(0x05) == "latin1"  # JIS: unknown here, read as latin1
    assert alphabet_of(0x90) == "latin1"  # reserved group
    assert alphabet_of(0) == "gsm7"
    assert alphabet_of(0, "latin1") == "latin1"
    assert decode_short_message(b"\x1b\x65", 0xF1) == ("€", None)
    assert decode_short_message(b"\x1b\x65", 0xF5) == (None, "1b65")


def test_decode_gsm_garbage_degrades():
    assert decode_gsm7(b"A\x1b") == "A\ufffd"  # escape cut off at the end
    assert decode_gsm7(b"\x1b\x1b") == " "  # TS 23.038: reserved, shown as a space
    assert decode_gsm7(b"\x1bA") == "A"  # not in the extension table: the basic character
    assert decode_gsm7(b"\x80A\x1b\xff") == "\ufffdA\ufffd\ufffd"


def test_decode_ucs2_garbage_degrades():
    # A lone high surrogate, then an odd trailing octet.
    text, _ = decode_short_message(b"\xd8\x3d\x00A\x00", 8)
    assert text == "\ufffdA\ufffd"


@given(data=st.binary(max_size=300), data_coding=st.integers(0, 255))
def test_decode_never_raises_and_never_returns_lone_surrogates(data, data_coding):
    for default_alphabet in ("gsm7", "latin1"):
        text, binary_hex = decode_short_message(data, data_coding, default_alphabet)
        assert (text is None) != (binary_hex is None)
        if text is None:
            assert bytes.fromhex(binary_hex) == data
        else:
            text.encode("utf-8")  # raises on a lone surrogate
