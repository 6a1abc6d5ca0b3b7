"""How this gateway cuts text for its SMSC: the text rules plus the settings."""

from __future__ import annotations

from django.conf import settings

from sms.splitting import SplitResult, split_message


def split_for_smsc(text: str, requested_encoding: str, reference: int = 0) -> SplitResult:
    """Split ``text`` the way the configured SMSC expects it.

    Raises ``UnencodableCharacter`` or ``TooManyParts`` for text we must refuse.
    """
    return split_message(
        text,
        requested_encoding,
        concat=settings.SMPP_CONCAT,
        reference=reference,
        max_parts=settings.SMS_MAX_PARTS,
        default_alphabet=settings.SMPP_DEFAULT_ALPHABET,
    )
