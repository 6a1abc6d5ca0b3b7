"""What each event says: the one schema of the events clients see.

An event's ``payload`` (stored in the Event table) is built here and nowhere
else, one builder per type: ``status`` (a message changed state), ``receipt``
(a delivery receipt arrived), ``mo`` (an incoming message), and the ``link``
state a worker rings (not stored: a named SSE event). ``client_view`` is the
JSON object every stream and webhook sends for a stored event. The key order of
each dict is part of the schema: clients see it byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict

from messaging.routing import public_name


class StatusPayload(TypedDict):
    type: Literal["status"]
    id: str  # our message id
    src: str
    dst: str
    text: str  # always "": the old server's leading keys
    state: str
    reference: str
    command_status: int | None
    error_code: int | None
    connector: str  # the connector it goes through ("default": the SMPP_* settings')


class ReceiptPayload(TypedDict):
    type: Literal["receipt"]
    src: str  # the receipt's source_addr
    dst: str  # the receipt's destination_addr
    text: str  # the receipt's text as it came
    id: str  # our message id
    message_id: str  # the SMSC's id
    state: str  # the receipt's stat
    error_code: int | None
    part: int  # which part of the message (0-based)
    parts: int
    reference: str
    connector: str  # whose SMSC sent the receipt


class MoPayload(TypedDict):
    type: Literal["mo"]
    src: str
    dst: str
    text: str
    incoming_id: str
    data_coding: int
    binary: str | None  # hex, when the message is binary
    parts: int
    complete: bool
    connector: str  # whose SMSC delivered it


class LinkPayload(TypedDict):
    worker_id: str
    state: str
    detail: str


# The keys that come first in what clients see, in the old server's order.
LEADING_KEYS = ("src", "dst", "text", "type")
LINK_KEYS = ("worker_id", "state", "detail")


class _Message(Protocol):
    pk: Any
    src: str
    dst: str
    reference: str
    command_status: int | None
    error_code: int | None
    connector: str


def status_payload(
    message_id: int,
    src: str,
    dst: str,
    reference: str,
    command_status: int | None,
    error_code: int | None,
    state: str,
    connector: str = "",
) -> StatusPayload:
    """A message changed state (the worker's batches call this with row fields)."""
    return {
        "type": "status",
        "id": str(message_id),
        "src": src,
        "dst": dst,
        "text": "",
        "state": state,
        "reference": reference,
        "command_status": command_status,
        "error_code": error_code,
        "connector": public_name(connector),
    }


def message_status_payload(message: _Message, state: str) -> StatusPayload:
    """``status_payload`` of a Message instance (the ORM paths)."""
    return status_payload(
        message.pk,
        message.src,
        message.dst,
        message.reference,
        message.command_status,
        message.error_code,
        state,
        message.connector,
    )


def receipt_payload(
    source_addr: str,
    destination_addr: str,
    raw_text: str,
    message_id: int,
    smsc_id: str,
    stat: str,
    error_code: int | None,
    part: int,
    parts: int,
    reference: str,
    connector: str = "",
) -> ReceiptPayload:
    """A delivery receipt for one part of our message ``message_id``."""
    return {
        "type": "receipt",
        "src": source_addr,
        "dst": destination_addr,
        "text": raw_text,
        "id": str(message_id),
        "message_id": smsc_id,
        "state": stat,
        "error_code": error_code,
        "part": part,
        "parts": parts,
        "reference": reference,
        "connector": public_name(connector),
    }


def mo_payload(
    incoming_id: int,
    src: str,
    dst: str,
    text: str,
    data_coding: int,
    binary_hex: str,
    parts: int,
    complete: bool,
    connector: str = "",
) -> MoPayload:
    """An incoming message, assembled (or given up on) from its fragments."""
    return {
        "type": "mo",
        "src": src,
        "dst": dst,
        "text": text,
        "incoming_id": str(incoming_id),
        "data_coding": data_coding,
        "binary": binary_hex or None,
        "parts": parts,
        "complete": complete,
        "connector": public_name(connector),
    }


def link_payload(worker_id: str, state: str, detail: str) -> LinkPayload:
    """A worker's link changed state (rung on the channel layer, sent as SSE ``link``)."""
    return {"worker_id": worker_id, "state": state, "detail": detail}


def link_payload_of(bell: Mapping[str, Any]) -> LinkPayload:
    """The ``link`` payload from the channel layer's ``link.state`` message."""
    return {key: bell.get(key) for key in LINK_KEYS}  # type: ignore[return-value]


def client_view(
    event_type: str, payload: Any, created_at: datetime | None, event_id: int | None
) -> dict:
    """The JSON object clients see for a stored event: the payload, its first keys in
    the old server's order (src, dst, text, type), then the additions, then ``at``
    (when the gateway recorded it, ISO 8601 UTC) and ``event_id``."""
    payload = payload if isinstance(payload, dict) else {}
    data = {key: payload.get(key, "") for key in LEADING_KEYS}
    data["type"] = payload.get("type") or event_type
    data.update((key, value) for key, value in payload.items() if key not in data)
    data["at"] = created_at.isoformat() if created_at else None
    data["event_id"] = event_id
    return data
