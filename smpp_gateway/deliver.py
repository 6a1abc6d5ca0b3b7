"""Reading a deliver_sm: a delivery receipt or a piece of an incoming message."""

from __future__ import annotations

from typing import Any

from messaging.splitting import parse_udh
from messaging.store import FragmentIn, ReceiptIn

from .pdu import as_text
from .receipts import normalize_smsc_id, parse_receipt, smsc_id_variants

RECEIPT_BITS = 0x3C
DELIVERY_RECEIPT = 0x04
INTERMEDIATE_NOTIFICATION = 0x20
UDHI = 0x40


def is_receipt(esm_class: int) -> bool:
    """Delivery receipts and intermediate notifications both report on a submit."""
    kind = (esm_class or 0) & RECEIPT_BITS
    return kind in (DELIVERY_RECEIPT, INTERMEDIATE_NOTIFICATION)


def read_deliver(pdu: Any) -> ReceiptIn | FragmentIn:
    """Classify and parse one decoded deliver_sm PDU."""
    esm_class = pdu.esm_class or 0
    short_message = pdu.short_message or b""
    payload = getattr(pdu, "message_payload", None)
    if payload and not short_message:
        short_message = payload
    if is_receipt(esm_class):
        tlv_id = getattr(pdu, "receipted_message_id", None)
        parsed = parse_receipt(
            short_message,
            receipted_message_id=tlv_id,
            message_state=getattr(pdu, "message_state", None),
            network_error_code=getattr(pdu, "network_error_code", None),
        )
        tlvs = {}
        if tlv_id:
            tlvs["receipted_message_id"] = normalize_smsc_id(tlv_id)
        if getattr(pdu, "message_state", None) is not None:
            tlvs["message_state"] = pdu.message_state
        if getattr(pdu, "network_error_code", None):
            tlvs["network_error_code"] = bytes(pdu.network_error_code).hex()
        return ReceiptIn(
            smsc_id=parsed.smsc_id,
            smsc_id_variants=smsc_id_variants(parsed.smsc_id) if parsed.smsc_id else (),
            stat=parsed.stat,
            message_state=parsed.message_state,
            error_code=parsed.error_code,
            submitted_date=parsed.submit_date,
            done_date=parsed.done_date,
            source_addr=as_text(pdu.source_addr),
            destination_addr=as_text(pdu.destination_addr),
            raw_text=short_message.decode("latin-1"),
            tlvs=tlvs,
        )
    reference, total, seq = None, 1, 1
    if esm_class & UDHI:
        concat, short_message = parse_udh(short_message)
        if concat is not None:
            reference, total, seq = concat.reference, concat.total, concat.seq
    sar_ref = getattr(pdu, "sar_msg_ref_num", None)
    if reference is None and sar_ref is not None:
        reference = sar_ref
        total = getattr(pdu, "sar_total_segments", None) or 1
        seq = getattr(pdu, "sar_segment_seqnum", None) or 1
    return FragmentIn(
        src=as_text(pdu.source_addr),
        dst=as_text(pdu.destination_addr),
        data_coding=pdu.data_coding or 0,
        payload=short_message,
        reference=reference,
        total=total,
        seq=seq,
    )
