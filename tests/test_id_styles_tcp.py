"""SMSC id styles over real TCP (issue 19): the simulator as the SMSC, a real worker
process, the real store.

With upper-case alphanumeric ids (``M1QK2V``, as in ``M1000580``) or zero-padded
response ids, receipts sent before their submit_sm_resp and responses 300 ms
late, every message is delivered; the API, the events (what the WebSocket, SSE
and webhooks carry) and the admin show each id as the SMSC gave it.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from messaging.models import Event, LinkStatus, Message, MessagePart, Receipt
from messaging.states import State
from smpp.smsc_ids import keys_match
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.id_styles import ID_STYLES, message_ids
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import wait_until
from tests.test_worker_poison_part import queue

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]

LATE = {"receipt_before_response": True, "response_delay": 0.3}
WORKER = {"SMPP_WINDOW": "100"}  # 300 ms a response: 100 in flight keep it a few seconds


def smsc(**config) -> SimulatorThread:
    return SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.02, seed=19, **config))


def delivered_count(ids: list[int]) -> int:
    return Message.objects.filter(pk__in=ids, state=State.DELIVERED).count()


def assert_each_id_kept_and_matched(simulator: SimulatorThread, ids: list[int]) -> None:
    """Parts hold the ids of the submit_sm_resp as sent; each receipt sits on its own part."""
    sent = {record.id_str: record for record in simulator.submits()}
    held = dict(MessagePart.objects.filter(message_id__in=ids).values_list("smsc_id", "message_id"))
    assert set(held) <= set(sent)  # exactly as sent: no case or zeros changed
    assert len(held) == len(ids)
    for smsc_id, part_id in Receipt.objects.filter(part__isnull=False).values_list(
        "smsc_id", "part__smsc_id"
    ):
        record = sent[part_id]
        assert smsc_id == (record.receipt_id or record.id_str)  # the receipt's own form
        assert keys_match(part_id, smsc_id)
    assert not Receipt.objects.filter(part__isnull=True).exists()


@pytest.mark.parametrize("style", ["alphanumeric", "zero-padded-response"])
def test_a_thousand_receipts_before_their_late_responses_are_all_matched(style, start_worker):
    with smsc(id_style=style, **LATE) as simulator:
        ids = queue(count=1000)
        start_worker(simulator.port, **WORKER)
        wait_until(lambda: delivered_count(ids) == len(ids), timeout=60, interval=0.25)
        stats = simulator.stats()
        assert stats["receipts_pending"] == 0
        assert_each_id_kept_and_matched(simulator, ids)
    if style == "alphanumeric":
        assert all(i.startswith("M") for i in MessagePart.objects.values_list("smsc_id", flat=True))
    else:
        assert all(
            i.startswith("00") for i in MessagePart.objects.values_list("smsc_id", flat=True)
        )


def test_receipts_before_late_responses_across_dropped_links(start_worker):
    """The issue's second run: the link drops mid-burst; every message still ends delivered."""
    with smsc(id_style="alphanumeric", disconnect_every_pdus=250, **LATE) as simulator:
        ids = queue(count=300)
        start_worker(simulator.port, SMPP_RESPONSE_TIMEOUT="2", **WORKER)
        wait_until(lambda: simulator.stats()["binds"] > 1, timeout=30, interval=0.01)
        simulator.set_config(disconnect_every_pdus=0)  # one drop (or two, if it rebound first)
        wait_until(lambda: delivered_count(ids) == len(ids), timeout=60, interval=0.25)
        assert Receipt.objects.filter(part__isnull=True).exists()  # the lost responses' receipts
        sent = {record.id_str for record in simulator.submits()}
        held = set(MessagePart.objects.values_list("smsc_id", flat=True))
        assert held <= sent and len(held) == len(ids)
        # Receipts left unmatched are those of sends whose response the drop lost:
        # their id was never learnt. None of them names an id a part holds.
        for smsc_id in Receipt.objects.filter(part__isnull=True).values_list("smsc_id", flat=True):
            assert not any(keys_match(part_id, smsc_id) for part_id in held), smsc_id


def test_the_api_events_and_admin_show_the_smscs_ids_unchanged(start_worker):
    api = APIClient()
    with smsc(id_style="alphanumeric", **LATE) as simulator:
        start_worker(simulator.port, **WORKER)
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists(), timeout=20)
        response = api.post("/v1/send", {"src": "bart", "dst": "lisa", "text": "hi"})
        assert response.status_code == 200, response.content
        body = response.json()
        (record,) = simulator.submits()
        smsc_id = record.id_str
        assert smsc_id.startswith("M") and smsc_id != smsc_id.lower()
        assert body["message_id"] == smsc_id and body["message_ids"] == [smsc_id]
        wait_until(lambda: Message.objects.get(pk=body["id"]).state == State.DELIVERED)

    detail = api.get(f"/v1/messages/{body['id']}").json()
    assert detail["message_ids"] == [smsc_id]
    assert [p["message_id"] for p in detail["part_details"]] == [smsc_id]
    assert [r["message_id"] for r in detail["receipts"]] == [smsc_id]
    listed = api.get("/v1/messages").json()
    (item,) = [m for m in listed["results"] if str(m["id"]) == str(body["id"])]
    assert item["message_ids"] == [smsc_id]
    # /v1/query finds it by the id in any case, and answers it as given
    queried = api.get(f"/v1/query?message_id={smsc_id.lower()}").json()
    assert queried["message_state"] == "DELIVERED" and queried["message_ids"] == [smsc_id]
    # Events: what the WebSocket, SSE and webhooks deliver
    (receipt_event,) = Event.objects.filter(type="receipt").values_list("payload", flat=True)
    assert receipt_event["message_id"] == smsc_id

    admin_user = get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    browser = Client()
    browser.force_login(admin_user)
    for url in (
        "/admin/messaging/message/",
        f"/admin/messaging/message/{body['id']}/change/",
        "/admin/messaging/receipt/",
    ):
        page = browser.get(url).content.decode()
        assert smsc_id in page and smsc_id.lower() not in page, url
    # Searched for in another case, it is found, and shown as given.
    for url in ("/admin/messaging/message/", "/admin/messaging/receipt/"):
        page = browser.get(url, {"q": smsc_id.lower()}).content.decode()
        assert "1 result" in page and f">{smsc_id}<" in page, url


@pytest.mark.parametrize("timing", ["receipt first", "response first"])
@pytest.mark.parametrize("style", sorted(s for s in ID_STYLES if s))
def test_every_id_style_in_either_order(style, timing, start_worker):
    """The simulator answers in each style; the gateway matches each, in either order
    (response first: the worker holds the result for its receipt, by the same key)."""
    with smsc(id_style=style, **(LATE if timing == "receipt first" else {})) as simulator:
        ids = queue(count=30)
        start_worker(simulator.port, **WORKER)
        wait_until(lambda: delivered_count(ids) == len(ids), timeout=30, interval=0.1)
        assert_each_id_kept_and_matched(simulator, ids)
        (record, *_) = simulator.submits()
        assert (record.id_str, record.receipt_id) == message_ids(style, record.message_id)


def test_the_simulator_refuses_an_unknown_style_or_two_at_once():
    with pytest.raises(ValueError, match="id_style must be one of"):
        SimulatorConfig(id_style="roman")
    with pytest.raises(ValueError, match="hex_ids"):
        SimulatorConfig(id_style="decimal", hex_ids=True)
    assert SimulatorConfig().replace(id_style="uuid").id_style == "uuid"
