"""Text encodings of the gateway: choosing one, encoding outgoing text, decoding incoming text.

Pure functions, no Django. The rules come from the API contract: a character the chosen
encoding cannot carry is an error that names it; nothing is replaced by "?" and nothing falls
back silently. Incoming bytes from an SMSC are another matter: they are decoded as well as
possible and never raise, garbage becoming U+FFFD.

GSM 03.38 (3GPP TS 23.038) is carried the SMPP way: unpacked, one octet per septet, the
extension table as ESC (0x1B) + code.
"""

import unicodedata

from gsm0338.charset import BASIC_CHARACTER_SET, BASIC_CHARACTER_SET_EXTENSION

# The order is the one of the 400 error text: "supported: auto, gsm7, ucs2, latin1, raw".
ENCODINGS = ("auto", "gsm7", "ucs2", "latin1", "raw")

# What data_coding 0 ("SMSC default alphabet") means on a given SMSC: a per-SMSC setting.
DEFAULT_ALPHABETS = ("gsm7", "latin1")

GSM_ESCAPE = 0x1B

# The tables come from the gsm0338 package (they match TS 23.038 exactly), by Unicode name.
# Its codec is not used: it encodes U+001B as a bare ESC, which a handset reads as the start of
# an escape pair, and it silently drops an ESC at the end of the data when decoding.
_GSM_BASIC = {
    code: unicodedata.lookup(name)
    for code, name in BASIC_CHARACTER_SET.items()
    if code != GSM_ESCAPE
}
_GSM_EXTENSION = {
    code: unicodedata.lookup(name) for code, name in BASIC_CHARACTER_SET_EXTENSION.items()
}
_GSM_ENCODE = {char: bytes([code]) for code, char in _GSM_BASIC.items()}
_GSM_ENCODE.update({char: bytes([GSM_ESCAPE, code]) for code, char in _GSM_EXTENSION.items()})

# Python codec names of the concrete encodings that are not GSM.
_PYTHON_CODECS = {"ucs2": "utf-16-be", "latin1": "latin-1", "raw": "utf-8"}

REPLACEMENT_CHARACTER = "\ufffd"


class UnencodableCharacter(ValueError):
    """A character of the text that the chosen encoding cannot carry (a 400 for the client)."""

    def __init__(self, char: str, position: int, encoding: str):
        self.char = char
        self.position = position
        self.encoding = encoding
        super().__init__(
            f"character {describe_character(char)} at position {position} "
            f"cannot be encoded in {encoding}"
        )


def describe_character(char: str) -> str:
    """Name a character so a person can find it: `"é" (U+00E9)`, or `U+001B` if unprintable."""
    code_point = f"U+{ord(char):04X}"
    if char.isprintable() and not char.isspace():
        return f'"{char}" ({code_point})'
    return code_point


def is_gsm7(char: str) -> bool:
    """True when the character is in the GSM 03.38 basic table or its extension table."""
    return char in _GSM_ENCODE


def _fits(char: str, encoding: str) -> bool:
    if encoding == "gsm7":
        return is_gsm7(char)
    return ord(char) <= 0xFF  # latin1


def resolve_encoding(
    text: str, requested: str, default_alphabet: str = "gsm7"
) -> tuple[str, list[str]]:
    """Turn the requested encoding into a concrete one.

    "auto" is gsm7 when every character fits GSM 03.38, else ucs2; the second item lists the
    distinct characters that forced ucs2, in order of first appearance, so the client can be
    told why the message costs more. On an SMSC whose default alphabet is latin1, gsm7 cannot
    be sent (see data_coding_for), so "auto" tries latin1 instead of gsm7 there.
    Any other supported name is returned as is.
    """
    if requested not in ENCODINGS:
        raise ValueError(f'unknown encoding "{requested}"; supported: {", ".join(ENCODINGS)}')
    if requested != "auto":
        return requested, []
    narrow = "latin1" if default_alphabet == "latin1" else "gsm7"
    if narrow == "gsm7" and _GSM_ENCODE.keys() >= set(text):  # the common case, in C
        return narrow, []
    forced_by = list(dict.fromkeys(char for char in text if not _fits(char, narrow)))
    return ("ucs2", forced_by) if forced_by else (narrow, [])


def encode_text(text: str, encoding: str) -> bytes:
    """Encode text in a concrete encoding (not "auto": resolve it first).

    gsm7 gives unpacked septets (extension characters as ESC + code; "@" is 0x00), ucs2 gives
    UTF-16BE (astral characters as surrogate pairs), latin1 ISO-8859-1, raw the UTF-8 bytes.
    Raises UnencodableCharacter for the first character the encoding cannot carry.
    """
    if encoding == "gsm7":
        try:
            return b"".join(_GSM_ENCODE[char] for char in text)
        except KeyError:
            position = next(i for i, char in enumerate(text) if char not in _GSM_ENCODE)
            raise UnencodableCharacter(text[position], position, encoding) from None
    if encoding not in _PYTHON_CODECS:
        raise ValueError(f'not a concrete encoding: "{encoding}"')
    try:
        return text.encode(_PYTHON_CODECS[encoding])
    except UnicodeEncodeError as error:
        # Lone surrogates are the only thing ucs2 and raw cannot carry.
        raise UnencodableCharacter(text[error.start], error.start, encoding) from None


def alphabet_carries(default_alphabet: str, encoding: str) -> bool:
    """Whether text encoded as ``encoding`` can go to an SMSC whose data_coding 0
    is ``default_alphabet`` (``data_coding_for``'s rule: gsm7 needs a GSM SMSC)."""
    try:
        data_coding_for(encoding, default_alphabet)
    except ValueError:
        return False
    return True


def data_coding_for(encoding: str, default_alphabet: str = "gsm7") -> int:
    """The SMPP data_coding for a concrete encoding.

    ucs2 is 8 and latin1 is 3 everywhere (3 even when the SMSC default is latin1: explicit is
    safer than a setting that may be wrong). gsm7 is 0, the SMSC default alphabet, so it can
    only be sent to an SMSC whose default alphabet is GSM 03.38. raw is 0, as the old server
    sent UTF-8 bytes.
    """
    if default_alphabet not in DEFAULT_ALPHABETS:
        raise ValueError(
            f'unknown default alphabet "{default_alphabet}"; '
            f"supported: {', '.join(DEFAULT_ALPHABETS)}"
        )
    if encoding == "gsm7":
        if default_alphabet != "gsm7":
            raise ValueError(
                "gsm7 cannot be sent: the SMSC default alphabet (data_coding 0) is "
                f"{default_alphabet}, and SMPP has no other data_coding for GSM 03.38"
            )
        return 0
    codes = {"ucs2": 8, "latin1": 3, "raw": 0}
    if encoding not in codes:
        raise ValueError(f'not a concrete encoding: "{encoding}"')
    return codes[encoding]


def decode_gsm7(data: bytes) -> str:
    """Decode unpacked GSM 03.38 septets; never raises.

    As TS 23.038 tells handsets: ESC + a code missing from the extension table shows the basic
    character, ESC ESC shows a space. Octets above 0x7F and an ESC at the very end are garbage
    and become U+FFFD.
    """
    chars = []
    position = 0
    while position < len(data):
        code = data[position]
        position += 1
        if code != GSM_ESCAPE:
            chars.append(_GSM_BASIC.get(code, REPLACEMENT_CHARACTER))
        elif position == len(data) or data[position] > 0x7F:
            chars.append(REPLACEMENT_CHARACTER)
        else:
            code = data[position]
            position += 1
            if code == GSM_ESCAPE:
                chars.append(" ")
            else:
                chars.append(_GSM_EXTENSION.get(code) or _GSM_BASIC[code])
    return "".join(chars)


def alphabet_of(data_coding: int, default_alphabet: str = "gsm7") -> str:
    """What a data_coding carries: "gsm7", "ascii", "latin1", "ucs2", "binary", or another
    Python codec name.

    0-14 are SMPP's own values (0 being the SMSC default alphabet); above that the value is a
    GSM 03.38 data coding scheme (chapter 4): general groups 0x10-0x7F (bits 3-2 give the
    alphabet, bit 5 compression), message waiting groups 0xC0-0xEF, and 0xF0-0xFF where bit 2
    means 8-bit data. Unknown values are read as latin1, which loses nothing.
    """
    smpp_values = {
        0: "latin1" if default_alphabet == "latin1" else "gsm7",
        1: "ascii",
        2: "binary",
        3: "latin1",
        4: "binary",
        6: "iso8859_5",
        7: "iso8859_8",
        8: "ucs2",
    }
    if data_coding in smpp_values:
        return smpp_values[data_coding]
    if 0x10 <= data_coding <= 0x7F:
        if data_coding & 0x20:  # compressed (TS 23.042): nothing we can read as text
            return "binary"
        return ("gsm7", "binary", "ucs2", "latin1")[(data_coding >> 2) & 0x03]
    if 0xC0 <= data_coding <= 0xDF:
        return "gsm7"
    if 0xE0 <= data_coding <= 0xEF:
        return "ucs2"
    if 0xF0 <= data_coding <= 0xFF:
        return "binary" if data_coding & 0x04 else "gsm7"
    return "latin1"


def decode_short_message(
    data: bytes, data_coding: int, default_alphabet: str = "gsm7"
) -> tuple[str | None, str | None]:
    """Decode what an SMSC delivered: (text, None) for text, (None, hex) for binary data.

    Never raises, whatever the bytes: an SMSC's garbage must not lose the rest of the message.
    Characters that cannot be decoded become U+FFFD; the text never holds a lone surrogate.
    """
    data = bytes(data)
    alphabet = alphabet_of(data_coding, default_alphabet)
    if alphabet == "binary":
        return None, data.hex()
    if alphabet == "gsm7":
        return decode_gsm7(data), None
    codec = "utf-16-be" if alphabet == "ucs2" else alphabet
    # "replace" turns lone surrogates and an odd trailing octet of UTF-16 into U+FFFD too.
    return data.decode(codec, errors="replace"), None
