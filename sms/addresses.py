"""What an SMPP address field can carry: the rule for ``src`` and ``dst``.

``source_addr`` and ``destination_addr`` are C-octet strings of at most 21
octets with their NUL: 20 characters, and in practice ASCII (the PDU codec
writes them as Latin-1 and an SMSC reads them as ASCII). Anything else must be
refused here, at the edge: a character the encoder cannot write stops the
worker's submit loop for everyone, not just the one message (issue 18).

The type of number (TON) and numbering plan (NPI) narrow it further (SMPP v3.4
5.2.5/5.2.6): international (1) and national (2) numbers of the ISDN plan (1)
are digits, an optional leading ``+`` dropped; an alphanumeric address (TON 5)
is at most 11 GSM 03.38 characters (the handset's TP-OA holds 11 septets).

Pure functions, no Django: the serializer calls them, the tests call them.
"""

from __future__ import annotations

import re

from sms.encoding import UnencodableCharacter, describe_character, encode_text

MAX_ADDRESS_LENGTH = 20  # octets of a C-octet string of 21, without its NUL
MAX_ALPHANUMERIC_SEPTETS = 11

TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_ALPHANUMERIC = 5
NPI_ISDN = 1

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_NUMBER = re.compile(r"\+?([0-9]+)")
_NOT_DIGIT = re.compile(r"[^0-9]")


class InvalidAddress(ValueError):
    """An address an SMPP field cannot carry; ``str()`` is the client's error text."""


def check_characters(value: str, name: str) -> str:
    """``value`` if it is printable ASCII of a length an address field may hold.

    The part of the rule that does not depend on TON/NPI, checked first so a bad
    character is named before any other parameter's error. One more character
    is let through when it starts with ``+``: a number's ``+`` is dropped later.
    """
    limit = MAX_ADDRESS_LENGTH + 1 if value.startswith("+") else MAX_ADDRESS_LENGTH
    if len(value) > limit:
        raise InvalidAddress(
            f'invalid parameter "{name}": at most {MAX_ADDRESS_LENGTH} characters '
            f"({len(value)} given)"
        )
    if _PRINTABLE_ASCII.fullmatch(value) is None:
        bad = _NOT_PRINTABLE_ASCII.search(value)
        assert bad is not None  # the fullmatch failed on some character
        raise InvalidAddress(
            f'invalid parameter "{name}": character {describe_character(bad.group())} '
            f"at position {bad.start()} is not allowed: "
            "addresses are printable ASCII"
        )
    return value


def clean_address(
    value: str, ton: int, npi: int, name: str, characters_checked: bool = False
) -> str:
    """The address as it is stored and sent, or ``InvalidAddress`` naming ``name``.

    An empty ``value`` stays empty (``src`` may be absent: the SMSC's default).
    ``characters_checked``: ``check_characters`` passed already (the serializer
    checks each field first), so it is not run twice on the hot path.
    """
    if not value:
        return value
    if not characters_checked:
        check_characters(value, name)
    if ton in (TON_INTERNATIONAL, TON_NATIONAL) and npi == NPI_ISDN:
        number = _NUMBER.fullmatch(value)
        if number is None:
            rest = value[1:] if value.startswith("+") else value
            bad = _NOT_DIGIT.search(rest)
            what = f"character {describe_character(bad.group())}" if bad else "no digits"
            raise InvalidAddress(
                f'invalid parameter "{name}": {what}: a number of TON {ton} and NPI 1 '
                "is digits only (an optional leading + is dropped)"
            )
        digits = number.group(1)
        if len(digits) > MAX_ADDRESS_LENGTH:
            raise InvalidAddress(
                f'invalid parameter "{name}": at most {MAX_ADDRESS_LENGTH} digits '
                f"({len(digits)} given)"
            )
        return digits
    if len(value) > MAX_ADDRESS_LENGTH:  # a "+" kept as part of the address
        raise InvalidAddress(
            f'invalid parameter "{name}": at most {MAX_ADDRESS_LENGTH} characters '
            f"({len(value)} given)"
        )
    if ton == TON_ALPHANUMERIC:
        try:
            septets = len(encode_text(value, "gsm7"))
        except UnencodableCharacter as exc:
            raise InvalidAddress(
                f'invalid parameter "{name}": {exc} (an alphanumeric address, TON 5)'
            ) from None
        if septets > MAX_ALPHANUMERIC_SEPTETS:
            raise InvalidAddress(
                f'invalid parameter "{name}": an alphanumeric address (TON 5) is at most '
                f"{MAX_ALPHANUMERIC_SEPTETS} GSM characters ({septets} given; "
                "one of [ ] { } ~ ^ | \\ counts 2)"
            )
    return value
