"""The one schema of event payloads (messaging.event_payloads): each builder gives
its TypedDict's keys in order, and clients see the JSON they always saw."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import get_type_hints

from messaging import event_payloads

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _keys(typed_dict) -> list[str]:
    return list(get_type_hints(typed_dict))


def test_each_builder_gives_its_schema_in_its_order():
    status = event_payloads.status_payload(7, "bart", "lisa", "r1", None, 0, "delivered")
    receipt = event_payloads.receipt_payload("lisa", "bart", "id:a", 7, "a", "DELIVRD", 0, 1, 2, "")
    mo = event_payloads.mo_payload(3, "lisa", "bart", "hi", 0, "", 1, True)
    link = event_payloads.link_payload("w1", "bound", "")
    assert list(status) == _keys(event_payloads.StatusPayload)
    assert list(receipt) == _keys(event_payloads.ReceiptPayload)
    assert list(mo) == _keys(event_payloads.MoPayload)
    assert list(link) == _keys(event_payloads.LinkPayload) == list(event_payloads.LINK_KEYS)
    assert (status["type"], receipt["type"], mo["type"]) == ("status", "receipt", "mo")
    assert status["id"] == receipt["id"] == "7" and mo["incoming_id"] == "3"
    assert mo["binary"] is None
    assert event_payloads.link_payload_of({"type": "link.state", **link}) == link


def test_every_payload_names_its_connector_as_people_call_it():
    uk = event_payloads.status_payload(7, "bart", "lisa", "r1", None, 0, "delivered", "uk")
    receipt = event_payloads.receipt_payload("l", "b", "t", 7, "a", "DELIVRD", 0, 1, 2, "", "uk")
    mo = event_payloads.mo_payload(3, "lisa", "bart", "hi", 0, "", 1, True, "")
    assert (uk["connector"], receipt["connector"], mo["connector"]) == ("uk", "uk", "default")


def test_clients_see_the_leading_keys_first_then_at_and_event_id():
    payload = event_payloads.status_payload(7, "bart", "lisa", "r1", None, 0, "delivered")
    view = event_payloads.client_view("status", payload, NOW, 41)
    assert json.dumps(view, separators=(",", ":")) == (
        '{"src":"bart","dst":"lisa","text":"","type":"status","id":"7","state":"delivered",'
        '"reference":"r1","command_status":null,"error_code":0,"connector":"default",'
        '"at":"2026-01-02T03:04:05+00:00","event_id":41}'
    )
    assert event_payloads.client_view("mo", None, None, 1) == {
        "src": "",
        "dst": "",
        "text": "",
        "type": "mo",
        "at": None,
        "event_id": 1,
    }
