"""The message id styles the simulator can answer in, as real SMSCs do.

Each style turns the simulator's running number into the id its submit_sm_resp
carries and the id its receipt carries (text ``id:`` and the
``receipted_message_id`` TLV). The gateway must match them whatever the style
(issue 19): see smpp.smsc_ids.
"""

from __future__ import annotations

import uuid

# name -> what it looks like (the --id-style help and docs/simulator.md say the same)
ID_STYLES: dict[str, str] = {
    "": "decimal (hex in the response with --hex-ids); the receipt text always in decimal",
    "lower-hex": "2dc8c4 in both",
    "upper-hex": "2DC8C4 in both",
    "decimal": "3000516 in both",
    "zero-padded-response": "00000000000003000516 in the response, 3000516 in the receipt",
    "zero-padded-receipt": "3000516 in the response, 00000000000003000516 in the receipt",
    "alphanumeric": "M followed by upper-case letters and digits (M1QK2V) in both",
    "uuid": "a UUID (6f9619ff-8b86-d011-b42d-00c04fc964ff) in both",
}
PADDED_WIDTH = 20  # digits of a zero-padded id (clock-based numbers have 17 or 18)
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Odd, so multiplying by it modulo 2**128 gives each number its own UUID.
_UUID_SPREAD = 0x9E3779B97F4A7C15F39CC0605CEDC835


def message_ids(style: str, number: int) -> tuple[str, str]:
    """(id in submit_sm_resp, id in the receipt) for ``number`` in ``style``.

    The default style ("") is answered by the server itself (``hex_ids``); here it
    gives the decimal form on both sides.
    """
    if style == "lower-hex":
        return (same := format(number, "x")), same
    if style == "upper-hex":
        return (same := format(number, "X")), same
    if style == "zero-padded-response":
        return str(number).zfill(PADDED_WIDTH), str(number)
    if style == "zero-padded-receipt":
        return str(number), str(number).zfill(PADDED_WIDTH)
    if style == "alphanumeric":
        return (same := "M" + _base36(number)), same
    if style == "uuid":
        return (same := str(uuid.UUID(int=number * _UUID_SPREAD % 2**128))), same
    if style in ("", "decimal"):
        return (same := str(number)), same
    raise ValueError(f"id_style must be one of {', '.join(repr(s) for s in ID_STYLES)}")


def _base36(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
        if not number:
            return "".join(reversed(digits))
