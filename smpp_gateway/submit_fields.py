"""Turning a stored part into the fields of its submit_sm."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from messaging.store import ClaimedPart

# The API's `register` values and the registered_delivery bits they set.
REGISTERED_DELIVERY = {"": 0, "final": 1, "failure": 2}


def relative_validity(until: datetime, now: datetime | None = None) -> str:
    """SMPP relative time (``YYMMDDhhmmss000R``) from now until ``until``; at least 1 s."""
    seconds = max(1, int((until - (now or timezone.now())).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    return f"{years:02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{seconds:02d}000R"


def submit_fields(
    part: ClaimedPart, now: datetime | None = None, overrides: tuple[tuple[str, int], ...] = ()
) -> dict[str, Any]:
    """Keyword arguments for ``encode_pdu("submit_sm", ...)``; ``overrides``: fields
    the connector sets whatever the message says (``WorkerConfig.submit_overrides``)."""
    fields: dict[str, Any] = {
        "source_addr_ton": part.src_ton,
        "source_addr_npi": part.src_npi,
        "source_addr": part.src,
        "dest_addr_ton": part.dst_ton,
        "dest_addr_npi": part.dst_npi,
        "destination_addr": part.dst,
        "esm_class": part.esm_class,
        "priority_flag": part.priority,
        "registered_delivery": REGISTERED_DELIVERY.get(part.register, 0),
        "data_coding": part.data_coding,
    }
    if part.validity_until is not None:
        fields["validity_period"] = relative_validity(part.validity_until, now)
    if part.use_payload:
        fields["message_payload"] = part.short_message
    else:
        fields["short_message"] = part.short_message
    if part.sar is not None:
        fields["sar_msg_ref_num"], fields["sar_total_segments"], fields["sar_segment_seqnum"] = (
            part.sar
        )
    if overrides:
        fields.update(overrides)
    return fields
