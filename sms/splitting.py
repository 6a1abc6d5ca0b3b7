"""Splitting outgoing text into SMS parts, and reading the UDH of incoming parts.

Pure functions, no Django. A long text becomes concatenated parts in one of the ways an SMSC
may want it (a per-SMSC setting):

- "udh": a User Data Header with an 8-bit reference, `05 00 03 ref total seq`, esm_class 0x40;
- "udh16": the same with a 16-bit reference, `06 08 04 refhi reflo total seq`;
- "sar": no UDH; the part numbers go into the SAR TLVs and the SMSC builds the UDH;
- "payload": the whole text in one PDU, to go in its message_payload TLV; the SMSC splits it.

A text that fits one SMS is sent as one plain short_message, whatever the mode: the modes only
differ for long texts. Parts are cut so that no GSM escape pair, UTF-16 surrogate pair or
UTF-8 sequence is ever split, and nothing is ever truncated.
"""

from dataclasses import dataclass, replace

from sms.encoding import data_coding_for, encode_text, resolve_encoding

CONCAT_MODES = ("udh", "udh16", "sar", "payload")

# A part count travels in one octet (UDH and sar_total_segments).
MAX_PARTS = 255

# Octets of user data: (single SMS, part with an 8-bit reference UDH, with a 16-bit one).
# GSM-7 travels unpacked in SMPP, so there octets are septets: 160 / 153 / 152 (the 6- or
# 7-octet UDH takes 7 or 8 septets on the air). UCS-2: 70 / 67 / 66 code units of 2 octets.
# 8-bit: 140 / 134 / 133. SAR parts get the UDH sizes: the SMSC adds the UDH on the air.
_CAPACITY = {
    "gsm7": (160, 153, 152),
    "ucs2": (140, 134, 132),
    "latin1": (140, 134, 133),
    "raw": (140, 134, 133),
}
# (unit name, octets per unit) for SplitResult.units.
_UNIT = {
    "gsm7": ("septets", 1),
    "ucs2": ("code units", 2),
    "latin1": ("octets", 1),
    "raw": ("octets", 1),
}

ESM_CLASS_UDHI = 0x40


@dataclass(frozen=True)
class PartSpec:
    """One submit_sm to send.

    short_message holds the exact octets to send, UDH included in the udh modes. When
    use_payload is set (payload mode) they are the whole encoded text and go in the
    message_payload TLV, the PDU's short_message field staying empty; one column stores both.
    sar is (reference, total, seq) for the SAR TLVs in sar mode, else None.
    """

    index: int
    total: int
    short_message: bytes
    esm_class: int = 0
    sar: tuple[int, int, int] | None = None
    use_payload: bool = False


@dataclass(frozen=True)
class SplitResult:
    """How a text goes out.

    units is the length of the whole text in unit_name ("septets", "code units" or "octets");
    ucs2_forced_by lists the characters that made "auto" choose ucs2. sms_count is how many SMS
    the text makes on the air: len(parts), except in payload mode, where one PDU carries them.
    """

    encoding: str
    data_coding: int
    parts: list[PartSpec]
    units: int
    unit_name: str
    ucs2_forced_by: list[str]
    sms_count: int


@dataclass(frozen=True)
class ConcatInfo:
    """Concatenation information element of an incoming part (seq is 1-based)."""

    reference: int
    total: int
    seq: int


class TooManyParts(ValueError):
    """The text needs more parts than allowed (a 400 for the client that says how many)."""

    def __init__(self, needed: int, maximum: int):
        self.needed = needed
        self.maximum = maximum
        super().__init__(f"text needs {needed} parts; at most {maximum} allowed")


def _cut_point(encoded: bytes, encoding: str, start: int, end: int) -> int:
    """Move a cut back so that it does not fall inside one character's octets."""
    if end >= len(encoded):
        return len(encoded)
    if encoding == "gsm7":
        # Every 0x1B octet starts an escape pair: no basic character encodes to it.
        if encoded[end - 1] == 0x1B:
            end -= 1
    elif encoding == "ucs2":
        if 0xD8 <= encoded[end - 2] <= 0xDB:  # high surrogate: its pair follows
            end -= 2
    elif encoding == "raw":
        while end > start and encoded[end] & 0xC0 == 0x80:  # UTF-8 continuation octet
            end -= 1
    return end


def split_encoded(encoded: bytes, encoding: str, capacity: int) -> list[bytes]:
    """Cut encoded text into chunks of at most `capacity` octets, each whole characters."""
    chunks = []
    start = 0
    while start < len(encoded):
        end = _cut_point(encoded, encoding, start, start + capacity)
        chunks.append(encoded[start:end])
        start = end
    return chunks or [b""]


def concat_udh(reference: int, total: int, seq: int, *, sixteen_bit: bool = False) -> bytes:
    """The UDH of one part: `05 00 03 ref total seq` or `06 08 04 refhi reflo total seq`."""
    if sixteen_bit:
        reference %= 65536
        return bytes([6, 0x08, 4, reference >> 8, reference & 0xFF, total, seq])
    return bytes([5, 0x00, 3, reference % 256, total, seq])


def split_message(
    text: str,
    requested_encoding: str = "auto",
    *,
    concat: str = "udh",
    reference: int = 0,
    max_parts: int = MAX_PARTS,
    default_alphabet: str = "gsm7",
) -> SplitResult:
    """Encode text and cut it into the submit_sm parts to send.

    reference is the concatenation reference, taken modulo 256 for "udh" and modulo 65536 for
    "udh16" and "sar" (sar_msg_ref_num is 16 bits). max_parts is capped at 255; in payload
    mode it limits the SMS the SMSC will make. An empty text is one part with no octets.
    Raises UnencodableCharacter, TooManyParts, or ValueError for a setting that cannot work.
    """
    if concat not in CONCAT_MODES:
        raise ValueError(f'unknown concat mode "{concat}"; supported: {", ".join(CONCAT_MODES)}')
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, not {max_parts}")
    encoding, forced_by = resolve_encoding(text, requested_encoding, default_alphabet)
    data_coding = data_coding_for(encoding, default_alphabet)
    encoded = encode_text(text, encoding)
    chunks = _chunks(encoded, encoding, concat)
    maximum = min(max_parts, MAX_PARTS)
    if len(chunks) > maximum:
        raise TooManyParts(len(chunks), maximum)
    unit_name, unit_octets = _UNIT[encoding]
    return SplitResult(
        encoding=encoding,
        data_coding=data_coding,
        parts=_part_specs(encoded, chunks, concat, reference),
        units=len(encoded) // unit_octets,
        unit_name=unit_name,
        ucs2_forced_by=forced_by,
        sms_count=len(chunks),
    )


def _chunks(encoded: bytes, encoding: str, concat: str) -> list[bytes]:
    """The encoded text as the SMS it takes: whole when it fits one, else cut to
    what a part holds beside its concatenation header (never inside a character)."""
    single, per_part_8bit, per_part_16bit = _CAPACITY[encoding]
    if len(encoded) <= single:
        return [encoded]
    per_part = per_part_16bit if concat == "udh16" else per_part_8bit
    return split_encoded(encoded, encoding, per_part)


def _part_specs(encoded: bytes, chunks: list[bytes], concat: str, reference: int) -> list[PartSpec]:
    """The submit_sm parts for ``chunks``, joined as ``concat`` says."""
    total = len(chunks)
    if total == 1:
        return [PartSpec(index=1, total=1, short_message=encoded)]
    if concat == "payload":  # one submit_sm; the SMSC makes the SMS
        return [PartSpec(1, 1, encoded, use_payload=True)]
    if concat == "sar":
        ref = reference % 65536
        return [
            PartSpec(seq, total, chunk, sar=(ref, total, seq))
            for seq, chunk in enumerate(chunks, start=1)
        ]
    return [
        PartSpec(
            seq,
            total,
            concat_udh(reference, total, seq, sixteen_bit=concat == "udh16") + chunk,
            esm_class=ESM_CLASS_UDHI,
        )
        for seq, chunk in enumerate(chunks, start=1)
    ]


def parse_udh(short_message: bytes) -> tuple[ConcatInfo | None, bytes]:
    """Split an incoming short_message whose esm_class has UDHI set into (concat info, data).

    The UDH is its length octet plus that many octets (for GSM-7 too: SMPP carries it as octets
    before the unpacked septets). Concatenation comes from IEI 0x00 (8-bit reference) or 0x08
    (16-bit); other elements are skipped, and a concatenation element with a zero or
    out-of-range number is ignored, as TS 23.040 says. A UDH that runs past its own length or
    past the data is malformed: (None, short_message) is returned unchanged so nothing is lost.
    """
    data = bytes(short_message)
    if not data or 1 + data[0] > len(data):
        return None, data
    header_end = 1 + data[0]
    concat = None
    position = 1
    while position < header_end:
        if position + 2 > header_end:
            return None, data
        iei, length = data[position], data[position + 1]
        value = data[position + 2 : position + 2 + length]
        position += 2 + length
        if position > header_end:
            return None, data
        if concat is not None:
            continue
        if iei == 0x00 and length == 3:
            reference, total, seq = value
        elif iei == 0x08 and length == 4:
            reference, total, seq = value[0] << 8 | value[1], value[2], value[3]
        else:
            continue
        if 1 <= seq <= total:
            concat = ConcatInfo(reference, total, seq)
    return concat, data[header_end:]


def with_reference(split: SplitResult, reference: int) -> SplitResult:
    """``split`` as ``split_message`` would have cut it with this concatenation reference:
    only the reference octets of each UDH (or the SAR reference) change, so a text
    checked once need not be encoded and cut again when its reference is known."""
    parts = []
    for part in split.parts:
        if part.sar is not None:
            part = replace(part, sar=(reference % 65536, part.total, part.index))
        elif part.esm_class & ESM_CLASS_UDHI:
            sixteen_bit = part.short_message[1] == 0x08  # the IEI: 16-bit reference
            udh = concat_udh(reference, part.total, part.index, sixteen_bit=sixteen_bit)
            part = replace(part, short_message=udh + part.short_message[len(udh) :])
        parts.append(part)
    return replace(split, parts=parts)
