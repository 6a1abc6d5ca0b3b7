"""Text the simulator produces: incoming (MO) messages split into parts, and receipt texts.

Written here rather than taken from smpplib (``smpplib.gsm`` splits escape
pairs and surrogate pairs, smpp.md) or from the gateway (the simulator is what
the gateway is tested against, so it must not share the gateway's bugs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM_CODEC = "gsm03.38"

# data_coding and the size limits of each alphabet: (single message, one part of several).
# GSM 03.38 counts septets (one octet each, unpacked, as SMPP carries them);
# UCS-2 and Latin-1 count octets: 70/67 UCS-2 code units, 140/134 octets.
ENCODINGS: dict[str, tuple[int, int, int]] = {
    "gsm7": (0x00, 160, 153),
    "latin1": (0x03, 140, 134),
    "ucs2": (0x08, 140, 134),
}
SPLITS = ("none", "udh", "sar")
MAX_PARTS = 255
ESM_UDHI = 0x40


@dataclass
class MOPart:
    """The fields of one deliver_sm carrying (a part of) an incoming message."""

    data_coding: int
    short_message: bytes = b""
    message_payload: bytes | None = None
    esm_class: int = 0
    sar: dict[str, int] = field(default_factory=dict)


def encode_char(char: str, encoding: str) -> bytes:
    """One character's octets; raises ``ValueError`` if the alphabet lacks it."""
    try:
        if encoding == "gsm7":
            return char.encode(GSM_CODEC)
        if encoding == "latin1":
            return char.encode("latin-1")
        return char.encode("utf-16-be")  # a character beyond the BMP is a surrogate pair
    except UnicodeEncodeError as exc:
        raise ValueError(f"{char!r} cannot be written in {encoding}") from exc


def chunk_text(text: str, encoding: str, limit: int) -> list[bytes]:
    """Cut the encoded text into chunks of at most ``limit`` octets.

    Cuts fall between characters only, so a GSM escape pair (``€`` = 1B 65) or
    a UTF-16 surrogate pair (an emoji) is never split across two parts.
    """
    chunks: list[bytes] = []
    current = bytearray()
    for char in text:
        octets = encode_char(char, encoding)
        if len(current) + len(octets) > limit:
            chunks.append(bytes(current))
            current = bytearray()
        current += octets
    if current or not chunks:
        chunks.append(bytes(current))
    return chunks


def split_mo(
    text: str,
    encoding: str = "gsm7",
    split: str = "none",
    reference: int = 0,
) -> list[MOPart]:
    """The deliver_sm parts that carry ``text``, in sending order (part 1 first).

    ``split="none"`` gives one deliver_sm: the text in ``short_message`` if it
    fits one SMS, else in the ``message_payload`` TLV (as an SMSC that
    reassembles long messages does). ``"udh"`` puts a concatenation header
    ``05 00 03 ref total seq`` in front of each part (esm_class 0x40); ``"sar"``
    uses the sar_* TLVs with a 16-bit reference. A text that fits one SMS is
    never split.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}")
    data_coding, single_limit, part_limit = ENCODINGS[encoding]
    whole = b"".join(encode_char(char, encoding) for char in text)
    if len(whole) <= single_limit:
        return [MOPart(data_coding=data_coding, short_message=whole)]
    if split == "none":
        return [MOPart(data_coding=data_coding, message_payload=whole)]
    chunks = chunk_text(text, encoding, part_limit)
    total = len(chunks)
    if total > MAX_PARTS:
        raise ValueError(f"text needs {total} parts, at most {MAX_PARTS} are possible")
    parts = []
    for seq, chunk in enumerate(chunks, start=1):
        if split == "udh":
            udh = bytes((0x05, 0x00, 0x03, reference & 0xFF, total, seq))
            parts.append(MOPart(data_coding, udh + chunk, esm_class=ESM_UDHI))
        else:
            sar = {
                "sar_msg_ref_num": reference & 0xFFFF,
                "sar_total_segments": total,
                "sar_segment_seqnum": seq,
            }
            parts.append(MOPart(data_coding, chunk, sar=sar))
    return parts


def user_text(short_message: bytes, esm_class: int, data_coding: int) -> str:
    """The message text of a submitted part, without its UDH, for the receipt's ``text:``."""
    if esm_class & ESM_UDHI and short_message:
        short_message = short_message[1 + short_message[0] :]
    short_message = short_message[:80]  # enough for 20 characters in any alphabet
    if data_coding == 0x08:
        return short_message.decode("utf-16-be", errors="replace")
    if data_coding == 0x00:
        return short_message.decode(GSM_CODEC, errors="replace")
    return short_message.decode("latin-1")


def smpp_date(moment: float) -> str:
    """YYMMDDhhmm in UTC, the date form of the receipt text (Appendix B)."""
    return _minute_date(int(moment // 60))


@functools.lru_cache(maxsize=4)
def _minute_date(minute: int) -> str:
    # Thousands of receipts a second share a handful of minutes: format each once.
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%y%m%d%H%M")


def smpp_absolute_time(moment: float) -> str:
    """YYMMDDhhmmsstnnp in UTC (SMPP 3.4 7.1.1), as query_sm_resp's final_date."""
    return datetime.fromtimestamp(moment, UTC).strftime("%y%m%d%H%M%S") + "000+"


def receipt_text(
    message_id: int | str,
    stat: str,
    error: int,
    submitted_at: float,
    done_at: float,
    text: str,
) -> bytes:
    """The Appendix B receipt text; ``id:`` is the decimal number given, or the id
    text of an id style (simulator.id_styles) as given.

    The original text is cut to 20 characters and anything outside printable
    ASCII becomes ``?``: gateways read receipt texts as ASCII, whatever the
    data_coding says.
    """
    delivered = "001" if stat == "DELIVRD" else "000"
    sample = "".join(c if " " <= c <= "~" else "?" for c in text[:20])
    return (
        f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{smpp_date(submitted_at)} "
        f"done date:{smpp_date(done_at)} stat:{stat} err:{error:03d} text:{sample}"
    ).encode("ascii")
