"""What the simulator remembers: accepted submits (for tests to inspect) and counters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ENROUTE = 1


@dataclass(slots=True, eq=False)
class SubmitRecord:
    """One accepted submit_sm, as the SMSC saw it."""

    index: int  # position in the simulator's log of accepted submits, from 0
    message_id: int
    id_str: str  # the id as sent in submit_sm_resp (hex when hex_ids)
    system_id: str
    session: int  # id of the SMPP session it came in on
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: bytes
    message_payload: bytes | None
    sar_msg_ref_num: int | None
    sar_total_segments: int | None
    sar_segment_seqnum: int | None
    received_at: float  # wall clock (time.time())
    duplicate: bool  # the same content reached the same destination before
    dup_key: int
    message_state: int = ENROUTE  # final state once the handset "got" it
    error_code: int = 0
    final_at: float | None = None
    receipt: str = ""  # "", "queued", "sent", "acknowledged", "refused"
    empty_id: bool = False  # accepted, but answered with an empty message_id (empty_id_rate)
    # The id the receipt carries (text and TLV) when an id_style is set; "" = the
    # default: id_str in the TLV, the decimal number in the text.
    receipt_id: str = ""

    @property
    def text_octets(self) -> bytes:
        """The user data: short_message, or message_payload when that carried it."""
        return self.short_message or self.message_payload or b""

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["short_message"] = self.short_message.hex()
        payload = self.message_payload
        data["message_payload"] = None if payload is None else payload.hex()
        del data["dup_key"]
        return data


@dataclass(slots=True)
class Stats:
    """Counters since start (or the last reset); ``SMSCSimulator.stats()`` adds live gauges."""

    binds: int = 0
    bind_failures: int = 0
    unbinds_received: int = 0
    unbinds_sent: int = 0
    disconnects: int = 0  # every closed connection, whoever closed it
    fault_disconnects: int = 0  # closed on purpose by disconnect_every_*
    submits_received: int = 0
    accepted: int = 0
    rejected: int = 0  # refused for the destination (ESME_RINVDSTADR)
    rejected_fault: int = 0  # answered error_status by error_rate
    throttled: int = 0  # beyond max_rate
    queue_full: int = 0  # answered 0x14 while queue_full_for lasts
    window_violations: int = 0  # beyond max_window
    responses_dropped: int = 0
    max_outstanding_seen: int = 0
    max_rate_seen: int = 0  # most submits received within one clock second
    duplicates: int = 0
    receipts_generated: int = 0
    receipts_sent: int = 0  # deliver_sm sent, retries included
    receipts_acknowledged: int = 0
    mo_queued: int = 0  # deliver_sm parts of injected MO messages
    mo_sent: int = 0  # retries included
    mo_acknowledged: int = 0
    deliver_errors: int = 0  # deliver_sm answered with a non-zero status
    deliver_timeouts: int = 0  # deliver_sm not answered within deliver_timeout
    late_responses: int = 0  # answers to deliver_sm already given up on
    queries: int = 0
    enquire_links_received: int = 0
    enquire_links_sent: int = 0
    generic_nacks_sent: int = 0
    generic_nacks_received: int = 0
    malformed_sent: int = 0
    deliveries_refused: int = 0  # deliver_sm answered with a permanent error: dropped
    empty_ids_sent: int = 0
    truncated_sent: int = 0  # deliver_sm with a body cut short (retries included)
    truncated_accepted: int = 0  # ... that a client answered 0 (it read garbage)
    floods: int = 0  # sessions flooded with enquire_link while not read
    flood_pdus_sent: int = 0
    pre_bind_pdus_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
