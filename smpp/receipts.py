"""Delivery receipts: read what real SMSCs send, and match them to our parts.

SMPP 3.4 Appendix B describes the receipt text as::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
    stat:DDDDDDD err:E text:...

but SMSCs vary: keys come in any case and order, fields are missing, dates
carry seconds or four-digit years, ids are long or in another base than in the
submit_sm_resp, and some send only TLVs. ``parse_receipt`` reads all of these
and never raises: a receipt we cannot fully read is still worth keeping, so it
returns whatever it could read.

Rules (so that behaviour is predictable):

- Only the keys *before* ``text:`` are parsed; ``text:`` and everything after
  it is the original message's text, so a message saying ``stat:UNDELIV``
  cannot change the receipt's status.
- The TLVs ``receipted_message_id``, ``message_state`` and
  ``network_error_code`` win over the text when present and readable.
- Dates are taken as UTC (the SMSC's clock is all we have).

The id is kept as the SMSC gave it; how it is matched to a part (case, leading
zeros, hex or decimal) is one rule for both sides, ``smpp.smsc_ids``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from smpp.smsc_ids import SMSC_ID_MAX_LENGTH

# SMPP 3.4 section 5.2.28, message_state values, and the 7-letter stat of the
# receipt text (Appendix B).
STAT_BY_STATE: dict[int, str] = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
STATE_BY_STAT: dict[str, int] = {stat: state for state, stat in STAT_BY_STATE.items()}

# Long or misspelt forms seen in the wild -> the 7-letter form.
_STAT_ALIASES: dict[str, str] = {
    "DELIVERED": "DELIVRD",
    "DELIVRED": "DELIVRD",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "UNDELIVRD": "UNDELIV",
    "REJECTED": "REJECTD",
    "ACCEPTED": "ACCEPTD",
    "EN_ROUTE": "ENROUTE",
    "EN-ROUTE": "ENROUTE",
}

_MAX_INT = 2**31 - 1  # what the store's integer columns hold; larger is garbage


@dataclass(frozen=True)
class ParsedReceipt:
    """What one delivery receipt says. Missing fields are ``None`` (or ``""``)."""

    smsc_id: str
    stat: str  # 7-letter form (DELIVRD, UNDELIV, ...) or "" when unknown
    message_state: int | None  # 1..8 as in SMPP message_state
    error_code: int | None
    sub: int | None
    dlvrd: int | None
    submit_date: datetime | None  # UTC aware
    done_date: datetime | None  # UTC aware
    text: str
    # The id came from the receipted_message_id TLV, which SMPP 3.4 defines as the
    # submit_sm_resp's id: no base to translate, whatever the SMSC does in the text.
    id_in_tlv: bool = False


# A key is a word at a word boundary followed by a colon. The underscored and
# run-together date keys are vendor variants; "status"/"error" too.
_KEY_RE = re.compile(
    r"\b(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat(?:us)?|err(?:or)?)\s*:",
    re.IGNORECASE,
)
_TEXT_KEY_RE = re.compile(r"\btext\s*:", re.IGNORECASE)
_DECIMAL_RE = re.compile(r"[0-9]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def parse_receipt(
    short_message: bytes | str,
    *,
    receipted_message_id: str | bytes | None = None,
    message_state: int | None = None,
    network_error_code: bytes | None = None,
) -> ParsedReceipt:
    """Read a delivery receipt's text and TLVs; never raises on malformed input."""
    body = _as_str(short_message).replace("\x00", "")
    fields, text = _split_fields(body)

    tlv_id = normalize_smsc_id(receipted_message_id)
    smsc_id = tlv_id or normalize_smsc_id(fields.get("id"))

    stat = normalize_stat(fields.get("stat", ""))
    state = STATE_BY_STAT.get(stat)
    tlv_state = _as_state(message_state)
    if tlv_state is not None:
        state, stat = tlv_state, STAT_BY_STATE[tlv_state]

    error_code = _network_error(network_error_code)
    if error_code is None:
        error_code = _parse_error_code(fields.get("err", ""))

    if len(smsc_id) > SMSC_ID_MAX_LENGTH:
        # No part holds such an id: kept unmatched (its text and TLVs say what it
        # was), never cut to a prefix that might be another part's id.
        smsc_id = ""
    return ParsedReceipt(
        smsc_id=smsc_id,
        stat=stat,
        message_state=state,
        error_code=error_code,
        sub=_parse_count(fields.get("sub", "")),
        dlvrd=_parse_count(fields.get("dlvrd", "")),
        submit_date=parse_receipt_date(fields.get("submit date", "")),
        done_date=parse_receipt_date(fields.get("done date", "")),
        text=text,
        id_in_tlv=bool(tlv_id) and bool(smsc_id),
    )


def _split_fields(body: str) -> tuple[dict[str, str], str]:
    """Return ({canonical key: first token of its value}, text after ``text:``).

    A value runs from its key to the next key; only its first word is kept,
    so unknown vendor keys between ours do no harm. The first occurrence of a
    key wins.
    """
    text_match = _TEXT_KEY_RE.search(body)
    if text_match:
        head, text = body[: text_match.start()], body[text_match.end() :]
    else:
        head, text = body, ""
    pieces = _KEY_RE.split(head)  # [before the first key, key, its value, key, value, ...]
    fields: dict[str, str] = {}
    for key, value in zip(pieces[1::2], pieces[2::2], strict=True):
        words = value.split(None, 1)
        fields.setdefault(_canonical_key(key), words[0] if words else "")
    return fields, text.strip()


@functools.lru_cache(maxsize=64)
def _canonical_key(key: str) -> str:
    key = key.lower()
    if key.startswith("submit"):
        return "submit date"
    if key.startswith("done"):
        return "done date"
    if key.startswith("stat"):
        return "stat"
    if key.startswith("err"):
        return "err"
    return key


def normalize_stat(value: str) -> str:
    """The 7-letter stat for any spelling we know (``delivered`` -> ``DELIVRD``), else "".

    A bare digit 1..8 is read as a message_state number, as a few SMSCs send.
    """
    value = value.strip().upper()
    if _DECIMAL_RE.fullmatch(value) and len(value) <= 2:
        return STAT_BY_STATE.get(int(value), "")
    value = _STAT_ALIASES.get(value, value)
    return value if value in STATE_BY_STAT else ""


@functools.lru_cache(maxsize=1024)  # receipts of the same minute carry the same dates
def parse_receipt_date(value: str) -> datetime | None:
    """A receipt date as a UTC datetime, or ``None`` if it is not a date.

    Accepted: YYMMDDhhmm, YYMMDDhhmmss, YYYYMMDDhhmm, YYYYMMDDhhmmss (separators
    are ignored). Twelve digits are ambiguous; YYMMDDhhmmss is tried first and
    YYYYMMDDhhmm used if that is not a valid date. Two-digit years are 20YY and
    four-digit years must lie in 1970..2099.
    """
    digits = "".join(ch for ch in value if ch in "0123456789")
    # (digits in the year, seconds present) for each accepted length, in order of preference
    layouts = {10: ((2, False),), 12: ((2, True), (4, False)), 14: ((4, True),)}
    for year_digits, with_seconds in layouts.get(len(digits), ()):
        year = int(digits[:year_digits])
        if year_digits == 2:
            year += 2000
        elif not 1970 <= year <= 2099:
            continue
        rest = digits[year_digits:]
        month, day, hour, minute = (int(rest[i : i + 2]) for i in range(0, 8, 2))
        second = int(rest[8:10]) if with_seconds else 0
        try:
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            continue
    return None


def _parse_count(value: str) -> int | None:
    value = value.strip()
    if _DECIMAL_RE.fullmatch(value) and len(value) <= 10 and int(value) <= _MAX_INT:
        return int(value)
    return None


def _parse_error_code(value: str) -> int | None:
    """``err:`` is decimal (``000``, ``011``); hex if prefixed ``0x`` or it has a-f."""
    value = value.strip().lower()
    if len(value) > 12:  # longer than any 32-bit number: garbage
        return None
    if _DECIMAL_RE.fullmatch(value):
        number = int(value)
    elif _HEX_RE.fullmatch(value.removeprefix("0x")):
        number = int(value.removeprefix("0x"), 16)
    else:
        return None
    return number if number <= _MAX_INT else None


def _network_error(value: bytes | None) -> int | None:
    """network_error_code TLV: network type octet, then a 2-octet error code."""
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if not isinstance(value, bytes | bytearray) or len(value) != 3:
        return None
    return int.from_bytes(value[1:3], "big")


def _as_state(value: object) -> int | None:
    """The message_state TLV if it is one of the eight SMPP 3.4 states."""
    if isinstance(value, bytes | bytearray) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool) and value in STAT_BY_STATE:
        return value
    return None


def _as_str(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        # Receipt text is ASCII; latin-1 maps every byte, so this cannot fail.
        return bytes(value).decode("latin-1")
    return str(value)


def normalize_smsc_id(value: bytes | str | None) -> str:
    """An SMSC message id as text: decoded, without NULs or surrounding whitespace."""
    return _as_str(value).replace("\x00", "").strip()


def submit_id_problem(smsc_id: str) -> str:
    """Why the id of an accepted submit_sm (status 0) cannot be its part's id, or "".

    Without an id no receipt can ever find the part; an id longer than the store
    keeps would have to be cut, and two parts could then share it. Either way
    the part fails with this reason rather than wait for a receipt for ever.
    """
    if not smsc_id:
        return "SMSC accepted without a message_id"
    if len(smsc_id) > SMSC_ID_MAX_LENGTH:
        return f"SMSC message_id longer than {SMSC_ID_MAX_LENGTH} characters ({len(smsc_id)})"
    return ""
