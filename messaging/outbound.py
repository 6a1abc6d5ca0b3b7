"""How this gateway cuts text for its SMSC: the text rules plus the settings."""

from __future__ import annotations

from django.conf import settings

from sms.splitting import SplitResult, split_message


def split_for_smsc(
    text: str, requested_encoding: str, reference: int = 0, default_alphabet: str = ""
) -> SplitResult:
    """Split ``text`` the way the configured SMSC expects it; ``default_alphabet``:
    what data_coding 0 means on the connector it goes to ("": SMPP_DEFAULT_ALPHABET).

    Raises ``UnencodableCharacter`` or ``TooManyParts`` for text we must refuse,
    ``ValueError`` for an encoding the alphabet cannot carry.
    """
    return split_message(
        text,
        requested_encoding,
        concat=settings.SMPP_CONCAT,
        reference=reference,
        max_parts=settings.SMS_MAX_PARTS,
        default_alphabet=default_alphabet or settings.SMPP_DEFAULT_ALPHABET,
    )
