"""SMSC message ids: kept exactly as the SMSC gave them, matched through one key.

An SMSC names each accepted submit_sm in its submit_sm_resp, and names it again
in the delivery receipt, not always in the same style. Seen in the wild:

- case: ``M1000580`` in one, ``m1000580`` in the other (or hex ``2DC8C4`` / ``2dc8c4``);
- leading zeros: ``0003000516`` in one, ``3000516`` in the other (either way round);
- base: hex in one (``2dc8c4``), decimal in the other (``3000516``), either way round.

The store keeps every id as given (answers, events, webhooks and the admin show
it so) and matches on its *match key*: ASCII letters lower-cased, leading zeros
dropped (``"0"`` for an id of zeros). A part and a receipt match when the part's
key is one of the receipt's ``match_keys`` (its key, then, for an id of digits,
the same number in hex, and for an id of hex digits, the number in decimal).
The relation is symmetric: the keys of the part's id contain the receipt's key
exactly when the receipt's keys contain the part's, so a receipt that came
first is found from the response's keys with the same rule.

Reading a digits-only id in both bases is a guess, and with small ids it can be
wrong (``20`` is also hex ``14``, another live part's id). An SMSC whose style is
known is matched without guessing: its ``IdStyle``, a setting of its connector
(as Kannel's ``msg-id-type``), turns the receipt's id into the response's form,
and only that form matches (``receipt_keys``, ``response_keys``).

Both sides store their key in an indexed column (``match_key``), so each lookup
is one ``IN`` over an index. These are plain string methods on short strings:
the receipt path calls them thousands of times a second.
"""

from __future__ import annotations

from enum import StrEnum

# An SMSC's message id is kept whole up to this length (SMPP says 64 characters;
# SMSCs send more). A longer one is refused for its part, never cut: cut, two
# parts could share one id and a receipt match the wrong message.
SMSC_ID_MAX_LENGTH = 255
_HEX_DIGITS = frozenset("0123456789abcdef")
# ASCII only: str.isdigit() also takes "²" (int() refuses it) and "١٢" (int() reads 12).
_DECIMAL_DIGITS = frozenset("0123456789")
# Ids longer than this are not SMPP ids (65 octets at most): no base conversion,
# which would cost more the longer they are and could never match a real id.
_MAX_NUMERIC_LENGTH = 64


def match_key(smsc_id: str | None) -> str:
    """The form an SMSC id is matched by: ASCII letters lower-cased, no leading zeros.

    ``""`` for no id. Non-ASCII text is left as it is (lower-casing it may change
    its length, and no SMSC sends it); the store cuts nothing, so a key is never
    longer than its id.
    """
    if not smsc_id:
        return ""
    key = smsc_id.lower() if smsc_id.isascii() else smsc_id
    return key.lstrip("0") or "0"


def match_keys(smsc_id: str | None) -> tuple[str, ...]:
    """The keys a part's or receipt's id matches the other side under, its own first.

    1. ``match_key(smsc_id)``;
    2. if it is all decimal digits: the number in hex (which the other side may use);
    3. if it is all hex digits: the number in decimal.

    A number of digits only gets both (its base cannot be told). Duplicates are
    removed. ``()`` for no id.
    """
    key = match_key(smsc_id)
    if not key:
        return ()
    if len(key) > _MAX_NUMERIC_LENGTH or not _HEX_DIGITS.issuperset(key):
        return (key,)  # letters beyond f, dashes, ...: case and zeros only
    in_decimal = str(int(key, 16))
    if not key.isdigit():
        return (key, in_decimal)
    return tuple(dict.fromkeys((key, format(int(key), "x"), in_decimal)))


class IdStyle(StrEnum):
    """How an SMSC writes one message's id in its submit_sm_resp and in its receipt."""

    AUTO = "auto"  # not known: a number of digits is read in both bases
    SAME = "same"  # the same form in both (case and leading zeros aside)
    HEX_IN_RESPONSE = "hex_response"  # hex in the response, decimal in the receipt
    HEX_IN_RECEIPT = "hex_receipt"  # decimal in the response, hex in the receipt

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    IdStyle.AUTO: "not known: digits are read as decimal and as hex (the default)",
    IdStyle.SAME: "the same in the response and the receipt (Kannel msg-id-type 0x00 or 0x03)",
    IdStyle.HEX_IN_RESPONSE: "hex in submit_sm_resp, decimal in the receipt (msg-id-type 0x01)",
    IdStyle.HEX_IN_RECEIPT: "decimal in submit_sm_resp, hex in the receipt (msg-id-type 0x02)",
}


def receipt_keys(
    smsc_id: str | None, style: str = IdStyle.AUTO, *, as_in_response: bool = False
) -> tuple[str, ...]:
    """The keys a receipt's id matches a part's under, for an SMSC of ``style``.

    ``AUTO``: ``match_keys`` (its own key first). A known style gives one key, the
    id in the response's form; an id not in the form the style promises (an SMSC
    that breaks its own style) keeps its own key, never a guess. The style is the
    receipt text's: an id known to be in the response's form already
    (``as_in_response``: the receipted_message_id TLV) is taken as it is.
    """
    if style == IdStyle.AUTO:
        return match_keys(smsc_id)
    key = match_key(smsc_id)
    if not key:
        return ()
    if len(key) <= _MAX_NUMERIC_LENGTH and not as_in_response:
        if style == IdStyle.HEX_IN_RESPONSE and _DECIMAL_DIGITS.issuperset(key):
            return (format(int(key), "x"),)
        if style == IdStyle.HEX_IN_RECEIPT and _HEX_DIGITS.issuperset(key):
            return (str(int(key, 16)),)
    return (key,)


def response_keys(smsc_id: str | None, style: str = IdStyle.AUTO) -> tuple[str, ...]:
    """The keys a receipt that overtook this submit_sm_resp was kept under (the
    receipt's first ``receipt_keys``), the response's own key first."""
    if style == IdStyle.AUTO:
        return match_keys(smsc_id)
    key = match_key(smsc_id)
    return (key,) if key else ()


def keys_match(part_id: str | None, receipt_id: str | None, style: str = IdStyle.AUTO) -> bool:
    """Whether a receipt naming ``receipt_id`` reports on the submit answered ``part_id``."""
    key = match_key(part_id)
    return bool(key) and key in receipt_keys(receipt_id, style)
