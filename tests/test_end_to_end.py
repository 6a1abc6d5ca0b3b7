"""Send and query end to end: API -> store -> worker process -> SMPP over TCP -> simulator."""

from __future__ import annotations

import signal

import pytest
from rest_framework.test import APIClient

from messaging.models import IncomingMessage, LinkStatus, Message, MessagePart, Receipt
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import free_port, wait_until

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api():
    return APIClient()


def state_of(message_id) -> str:
    return Message.objects.get(pk=message_id).state


def test_send_submit_receipt_query(api, simulator, start_worker):
    start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists(), timeout=20)
    response = api.post("/v1/send", {"src": "bart", "dst": "lisa", "text": "hi"})
    assert response.status_code == 200, response.content
    body = response.json()
    (record,) = simulator.submits()
    assert body["message_id"] == record.id_str  # the simulator's id
    assert record.short_message == b"hi" and record.destination_addr == "lisa"
    assert record.registered_delivery == 1

    def delivered():
        return (
            api.get(f"/v1/query?src=bart&message_id={body['message_id']}").json()["message_state"]
            == "DELIVERED"
        )

    wait_until(delivered)
    by_ours = api.get(f"/v1/query?id={body['id']}").json()
    assert by_ours["message_state"] == "DELIVERED" and by_ours["error_code"] == 0
    assert [h["to_state"] for h in by_ours["history"]] == [
        "queued",
        "submitting",
        "submitted",
        "delivered",
    ]
    receipt = Receipt.objects.get()
    assert receipt.part.message_id == int(body["id"]) and receipt.stat == "DELIVRD"


def test_enquire_link_is_sent_when_idle(simulator, start_worker):
    start_worker(simulator.port, SMPP_ENQUIRE_LINK_INTERVAL="0.3")
    wait_until(lambda: simulator.stats()["enquire_links_received"] >= 2, timeout=10)


def test_unbind_from_the_smsc_is_answered_and_the_worker_binds_again(simulator, start_worker):
    start_worker(simulator.port)
    wait_until(lambda: simulator.stats()["binds"] == 1)
    simulator.unbind_all()
    wait_until(lambda: simulator.stats()["binds"] == 2, timeout=10)


def test_smsc_refusal_is_502_and_failed(api, simulator, start_worker):
    start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
    response = api.post("/v1/send", {"dst": "999123", "text": "hi"})
    assert response.status_code == 502, response.content
    body = response.json()
    assert body["command_status"] == 11 and body["command_status_name"] == "ESME_RINVDSTADR"
    assert body["error"] == "Invalid Destination Address"
    assert state_of(body["id"]) == "failed"


def test_smsc_down_at_send_time_is_sent_once_it_is_up(api, start_worker, tmp_path):
    port = free_port()
    worker = start_worker(port)
    response = api.post("/v1/send", {"dst": "lisa", "text": "later", "wait": "1"})
    assert response.status_code == 202
    message_id = response.json()["id"]
    assert state_of(message_id) == "queued"
    # With no worker bound the send no longer waits (issue 21): wait here for the
    # worker to find the SMSC down before bringing it up.
    wait_until(lambda: "connection failed" in worker.output(), timeout=30)
    with SimulatorThread(SimulatorConfig(port=port, receipt_delay=0.05)) as smsc:
        wait_until(lambda: state_of(message_id) == "delivered", timeout=30)
        assert [r.short_message for r in smsc.submits()] == [b"later"]


def test_receipt_before_response_and_hex_ids_are_matched(api, start_worker):
    config = SimulatorConfig(port=0, receipt_delay=0, receipt_before_response=True, hex_ids=True)
    with SimulatorThread(config) as smsc:
        start_worker(smsc.port)
        ids = [
            api.post("/v1/send", {"dst": f"55{i}", "text": f"m{i}", "wait": "0"}).json()["id"]
            for i in range(20)
        ]
        wait_until(lambda: all(state_of(i) == "delivered" for i in ids), timeout=30)
    assert Receipt.objects.filter(part__isnull=True).count() == 0


def test_worker_killed_and_restarted_loses_nothing(api, start_worker):
    total = 300
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.01)) as smsc:
        ids = [
            api.post("/v1/send", {"dst": f"7{i:04d}", "text": f"n{i}", "wait": "0"}).json()["id"]
            for i in range(total)
        ]
        # Short leases so that, on PostgreSQL, the parts the dead worker held come back soon.
        quick = {"SMPP_WINDOW": "10", "SMPP_RESPONSE_TIMEOUT": "1", "SMPP_LEASE_SECONDS": "3"}
        worker = start_worker(smsc.port, **quick)
        wait_until(lambda: len(smsc.submits()) >= total // 3, timeout=30)
        worker.stop(signal.SIGKILL)
        start_worker(smsc.port, **quick)
        wait_until(lambda: Message.objects.filter(state="delivered").count() == total, timeout=60)
        records = smsc.submits()
    assert sorted(int(i) for i in ids) == sorted(
        Message.objects.filter(state="delivered").values_list("id", flat=True)
    )
    sent = {}
    for record in records:
        sent.setdefault(record.short_message, []).append(record)
    assert len(sent) == total  # every message reached the SMSC
    twice = {text for text, recs in sent.items() if len(recs) > 1}
    # A part sent twice is one whose first outcome the worker could not know.
    marked = set(
        MessagePart.objects.filter(possibly_duplicated=True).values_list("message__text", flat=True)
    )
    assert {t.decode() for t in twice} <= marked


def test_graceful_stop_unbinds(simulator, start_worker):
    worker = start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
    assert worker.stop(signal.SIGTERM) == 0
    assert LinkStatus.objects.get().state == "stopped"
    assert simulator.stats()["unbinds_received"] == 1


def test_bind_refused_is_logged(start_worker):
    with SimulatorThread(SimulatorConfig(port=0, password="other")) as smsc:
        worker = start_worker(smsc.port)
        wait_until(lambda: LinkStatus.objects.filter(detail__contains="bind failed").exists())
        worker.stop()
    assert "ESME_RINVPASWD" in worker.output()


def test_incoming_messages_are_stored(simulator, start_worker):
    start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
    simulator.inject_mo("lisa", "bart", "hello there")
    long_text = "A long incoming text that needs parts. " * 8
    simulator.inject_mo("homer", "bart", long_text, split="udh", out_of_order=True)
    wait_until(lambda: IncomingMessage.objects.count() == 2)
    texts = dict(IncomingMessage.objects.values_list("src", "text"))
    assert texts == {"lisa": "hello there", "homer": long_text}
    assert IncomingMessage.objects.get(src="homer").parts_expected > 1


def test_query_asks_the_smsc_when_the_store_has_no_final_state(start_worker):
    """In one process (as `manage.py serve` runs) the query reaches the worker over the
    in-process layer; in the distributed set-up, over Redis."""
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.05)) as smsc:
        start_worker(smsc.port)
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
        api = APIClient()
        # register=failure: a delivered message brings no receipt, only query_sm can tell.
        body = api.post("/v1/send", {"dst": "lisa", "text": "hi", "register": "failure"}).json()
        assert body["message_id"]
        import time

        time.sleep(0.3)
        answer = api.get(f"/v1/query?message_id={body['message_id']}").json()
        assert smsc.stats()["queries"] == (1 if _layer_crosses_processes() else 0)
    assert answer["status"] == "submitted"
    if _layer_crosses_processes():
        assert answer["message_state"] == "DELIVERED" and answer["source"] == "smsc"
    else:  # the worker is another process: the store's answer stands
        assert answer["message_state"] == "ENROUTE"


def _layer_crosses_processes() -> bool:
    from django.conf import settings

    return bool(settings.REDIS_URL)
