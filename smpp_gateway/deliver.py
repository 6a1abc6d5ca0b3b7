"""Reading a deliver_sm or data_sm: a delivery receipt or a piece of an incoming message.

SMPP 3.4 lets an SMSC send both as data_sm (some do): the text is in
``message_payload`` (data_sm has no short_message), a receipt is marked by
esm_class as in deliver_sm or, failing that, by its receipt TLVs
(``receipted_message_id`` with ``message_state``).
"""

from __future__ import annotations

from typing import Any

from messaging.models import IncomingFragment, Receipt
from messaging.store import FragmentIn, ReceiptIn, storable_text
from smpp.constants import (
    ESM_CLASS_DELIVERY_RECEIPT,
    ESM_CLASS_INTERMEDIATE_NOTIFICATION,
    ESM_CLASS_MESSAGE_TYPE,
    ESM_CLASS_UDHI,
)
from smpp.pdu import as_text
from smpp.receipts import normalize_smsc_id, parse_receipt
from smpp.smsc_ids import IdStyle, receipt_keys
from sms.splitting import parse_udh

# What the store's address columns hold (the same for receipts and incoming messages).
RECEIPT_ADDRESS_MAX = Receipt._meta.get_field("source_addr").max_length
INCOMING_ADDRESS_MAX = IncomingFragment._meta.get_field("src").max_length


class Unstorable(ValueError):
    """A deliver_sm whose content the store cannot hold as it is: refused for good
    (ESME_RX_P_APPN), since the SMSC would only send the same bytes again."""


def _receipt_address(value: str, name: str, kept: dict) -> str:
    """An address for a receipt's column; a longer one is kept whole in ``kept``.

    A receipt is worth keeping whatever its addresses look like: its id and
    state are what move the part.
    """
    if len(value) <= RECEIPT_ADDRESS_MAX:
        return value
    kept[name] = value
    return value[:RECEIPT_ADDRESS_MAX]


def is_receipt(esm_class: int) -> bool:
    """Delivery receipts and intermediate notifications both report on a submit."""
    kind = (esm_class or 0) & ESM_CLASS_MESSAGE_TYPE
    return kind in (ESM_CLASS_DELIVERY_RECEIPT, ESM_CLASS_INTERMEDIATE_NOTIFICATION)


def _is_data_sm_receipt(pdu: Any) -> bool:
    """A data_sm whose esm_class does not say so, but that carries a receipt's TLVs."""
    return (
        getattr(pdu, "command", "") == "data_sm"
        and bool(getattr(pdu, "receipted_message_id", None))
        and getattr(pdu, "message_state", None) is not None
    )


def read_deliver(pdu: Any, id_style: str = IdStyle.AUTO) -> ReceiptIn | FragmentIn:
    """Classify and parse one decoded deliver_sm (or data_sm) PDU from an SMSC that
    writes its message ids in ``id_style`` (``smpp.smsc_ids.IdStyle``)."""
    esm_class = pdu.esm_class or 0
    short_message = getattr(pdu, "short_message", None) or b""
    payload = getattr(pdu, "message_payload", None)
    if payload and not short_message:
        short_message = payload
    if is_receipt(esm_class) or _is_data_sm_receipt(pdu):
        return _read_receipt(pdu, short_message, id_style)
    return _read_fragment(pdu, esm_class, short_message)


def _read_receipt(pdu: Any, short_message: bytes, id_style: str) -> ReceiptIn:
    """A delivery receipt: its text parsed, its TLVs kept (the id normalised)."""
    tlv_id = getattr(pdu, "receipted_message_id", None)
    parsed = parse_receipt(
        short_message,
        receipted_message_id=tlv_id,
        message_state=getattr(pdu, "message_state", None),
        network_error_code=getattr(pdu, "network_error_code", None),
    )
    tlvs = {}
    if tlv_id:
        tlvs["receipted_message_id"] = storable_text(normalize_smsc_id(tlv_id))
    if getattr(pdu, "message_state", None) is not None:
        tlvs["message_state"] = pdu.message_state
    if getattr(pdu, "network_error_code", None):
        tlvs["network_error_code"] = bytes(pdu.network_error_code).hex()
    return ReceiptIn(
        smsc_id=parsed.smsc_id,
        match_keys=receipt_keys(parsed.smsc_id, id_style, as_in_response=parsed.id_in_tlv),
        stat=parsed.stat,
        message_state=parsed.message_state,
        error_code=parsed.error_code,
        submitted_date=parsed.submit_date,
        done_date=parsed.done_date,
        source_addr=_receipt_address(as_text(pdu.source_addr), "source_addr", tlvs),
        destination_addr=_receipt_address(as_text(pdu.destination_addr), "destination_addr", tlvs),
        # PostgreSQL text cannot hold NUL: the receipt is kept with U+FFFD instead.
        raw_text=storable_text(short_message.decode("latin-1")),
        tlvs=tlvs,
    )


def _read_fragment(pdu: Any, esm_class: int, short_message: bytes) -> FragmentIn:
    """An incoming message, or one piece of it (UDH or SAR TLVs say which)."""
    src, dst = as_text(pdu.source_addr), as_text(pdu.destination_addr)
    for name, value in (("source_addr", src), ("destination_addr", dst)):
        if len(value) > INCOMING_ADDRESS_MAX:
            # Cut, a reply would go to someone else: refused instead.
            raise Unstorable(
                f"incoming message with a {name} of {len(value)} characters "
                f"(at most {INCOMING_ADDRESS_MAX}): {value[:80]!r}"
            )
    reference, total, seq = None, 1, 1
    if esm_class & ESM_CLASS_UDHI:
        concat, short_message = parse_udh(short_message)
        if concat is not None:
            reference, total, seq = concat.reference, concat.total, concat.seq
    sar_ref = getattr(pdu, "sar_msg_ref_num", None)
    if reference is None and sar_ref is not None:
        reference = sar_ref
        total = getattr(pdu, "sar_total_segments", None) or 1
        seq = getattr(pdu, "sar_segment_seqnum", None) or 1
    return FragmentIn(
        src=src,
        dst=dst,
        data_coding=pdu.data_coding or 0,
        payload=short_message,
        reference=reference,
        total=total,
        seq=seq,
    )
