"""Inputs for the store's batch functions, shared by the store, admin and metrics tests."""

from __future__ import annotations

from messaging.outbound import split_for_smsc
from messaging.store import NewMessage, ReceiptIn
from smpp.smsc_ids import match_keys


def new_message(text: str = "hi", dst: str = "lisa", **kwargs) -> NewMessage:
    """A validated send request from bart, split as the API would split it."""
    return NewMessage(dst=dst, text=text, split=split_for_smsc(text, "auto"), src="bart", **kwargs)


def receipt(smsc_id: str, stat: str = "DELIVRD", state: int = 2) -> ReceiptIn:
    """A delivery receipt from lisa's handset, as the worker reads it off the wire."""
    return ReceiptIn(
        smsc_id=smsc_id,
        match_keys=match_keys(smsc_id),
        stat=stat,
        message_state=state,
        error_code=0,
        submitted_date=None,
        done_date=None,
        source_addr="lisa",
        destination_addr="bart",
        raw_text=f"id:{smsc_id} stat:{stat}",
        tlvs={"message_state": state},
    )
