"""The PDUs the simulated SMSC sends on its own: receipts and the parts of incoming messages.

Both go out as deliver_sm, or as data_sm when the config says so (``data_sm``),
and are encoded once, with sequence 0 (each attempt patches its sequence in).
The texts (the receipt's ``id: ... stat:``, the parts of an MO) are the
simulator's own (``texts``): an oracle independent of the gateway's parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from smpp.constants import ADDRESS_MAX, ESM_CLASS_DELIVERY_RECEIPT, MESSAGE_ID_MAX
from smpp_gateway.simulator.config import SimulatorConfig
from smpp_gateway.simulator.records import SubmitRecord
from smpp_gateway.simulator.texts import MOPart, receipt_text, user_text
from smpp_gateway.simulator.wire import data_sm, deliver_sm

GSM_NETWORK = 3  # network_error_code's first octet: the error comes from a GSM network


def ton_npi(address: str) -> tuple[int, int]:
    """TON/NPI an SMSC would give an address: international number, else alphanumeric."""
    if address.lstrip("+").isdigit():
        return 1, 1
    return 5, 0


def incoming_encoder(config: SimulatorConfig) -> Callable[..., bytes]:
    """What receipts and MO go out as: deliver_sm, or data_sm (``data_sm``)."""
    return data_sm if config.data_sm else deliver_sm


def mo_pdus(config: SimulatorConfig, src: str, dst: str, parts: Sequence[MOPart]) -> list[bytes]:
    """The PDUs of an incoming message's parts, from handset ``src`` to ``dst``."""
    address_limit = ADDRESS_MAX
    if config.mo_source_addr_length:  # a source_addr longer than SMPP allows
        src = src.ljust(config.mo_source_addr_length, "0")
        address_limit = max(ADDRESS_MAX, len(src))
    source_ton, source_npi = ton_npi(src)
    dest_ton, dest_npi = ton_npi(dst)
    encode = incoming_encoder(config)
    pdus = []
    for part in parts:
        fields: dict[str, Any] = dict(
            source_addr_ton=source_ton,
            source_addr_npi=source_npi,
            source_addr=src,
            dest_addr_ton=dest_ton,
            dest_addr_npi=dest_npi,
            destination_addr=dst,
            esm_class=part.esm_class,
            data_coding=part.data_coding,
            short_message=part.short_message,
            address_limit=address_limit,
            **part.sar,
        )
        if part.message_payload is not None:
            fields["message_payload"] = part.message_payload
        pdus.append(encode(0, **fields))
    return pdus


def receipt_pdu(config: SimulatorConfig, record: SubmitRecord, stat: str, error: int) -> bytes:
    """The receipt, from the handset (the submit's destination) to the submit's source."""
    fields: dict[str, Any] = dict(
        source_addr_ton=record.dest_addr_ton,
        source_addr_npi=record.dest_addr_npi,
        source_addr=record.destination_addr,
        dest_addr_ton=record.source_addr_ton,
        dest_addr_npi=record.source_addr_npi,
        destination_addr=record.source_addr,
        esm_class=ESM_CLASS_DELIVERY_RECEIPT,
    )
    if config.receipt_text:
        text = user_text(record.text_octets, record.esm_class, record.data_coding)
        fields["short_message"] = receipt_text(
            record.receipt_id or record.message_id,
            stat,
            error,
            record.received_at,
            record.final_at or 0.0,
            text,
        )
        if config.receipt_nul:  # PostgreSQL's text cannot hold these
            fields["short_message"] += b"\0\0nul\0"
    if config.receipt_tlvs:
        fields["receipted_message_id"] = record.receipt_id or record.id_str
        fields["message_state"] = record.message_state
        fields["network_error_code"] = bytes((GSM_NETWORK,)) + error.to_bytes(2, "big")
    longest = max(len(record.id_str), len(record.receipt_id))
    encode = incoming_encoder(config)
    return encode(0, message_id_limit=max(MESSAGE_ID_MAX, longest), **fields)
