"""Real SMSCs' habits (issue 20), over real TCP against the simulator with a real worker:
a rate limit enforced with ESME_RTHROTTLED after an idle spell, incoming messages and
receipts sent as data_sm, throttling and queue-full an operator can see, a session that
refuses every submit, a bind answered by closing the socket, and bells that find a full
channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from messaging import store
from messaging.models import IncomingMessage, LinkStatus, Receipt
from messaging.outbound import split_for_smsc
from messaging.states import State
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import wait_until
from tests.test_worker_poison_part import RunningWorker, states

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def smsc(**behaviour) -> SimulatorThread:
    return SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.02, seed=20, **behaviour))


@pytest.fixture
def worker_on() -> Iterator:
    started: list[RunningWorker] = []

    def start(simulator: SimulatorThread, **options) -> RunningWorker:
        running = RunningWorker(simulator.port, **options).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def delivered(ids: list[int]) -> bool:
    return states(ids) == [State.DELIVERED] * len(ids)


def distinct(count: int, prefix: str = "burst") -> list[int]:
    """``count`` messages of distinct texts (the simulator counts equal ones as duplicates)."""
    new = []
    for n in range(count):
        text = f"{prefix} {n}"
        split = split_for_smsc(text, "gsm7")
        new.append(
            store.NewMessage(dst="4915550001", src="", text=text, split=split, register="final")
        )
    return [m.pk for m in store.create_messages(new)]


# --- the rate after an idle spell ------------------------------------------------------------


def test_a_burst_after_idle_past_the_smscs_rate_goes_out_at_about_that_rate(worker_on):
    """500 messages at once to an SMSC that takes 50 a second (ESME_RTHROTTLED beyond):
    the first throttle halves what was being sent, not the ~0 of the idle second before,
    so they go out in about 10 s, not 28 (the figure is printed, not asserted closely)."""
    with smsc(max_rate=50.0) as simulator:
        worker_on(simulator)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        time.sleep(1.5)  # idle: a maintenance interval with nothing sent
        started = time.monotonic()
        ids = distinct(500)
        per_second: list[int] = []
        last = 0
        while simulator.stats()["accepted"] < 500 and time.monotonic() - started < 60:
            time.sleep(1.0)
            accepted = simulator.stats()["accepted"]
            per_second.append(accepted - last)
            last = accepted
        took = time.monotonic() - started
        print(
            f"\nburst after idle: 500 messages at 50/s took {took:.1f} s; per second {per_second}"
        )
        assert simulator.stats()["accepted"] == 500
        assert took < 20
        wait_until(lambda: delivered(ids), timeout=30)
        assert simulator.stats()["duplicates"] == 0


# --- data_sm from the SMSC ---------------------------------------------------------------------


def test_incoming_messages_and_receipts_sent_as_data_sm_are_stored_and_answered(worker_on):
    with smsc(data_sm=True) as simulator:
        running = worker_on(simulator)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        ids = distinct(5, "via data_sm")  # their receipts come as data_sm
        simulator.inject_mo("4917000001", "12345", "an answer as data_sm")
        simulator.inject_mo("4917000002", "12345", "ein Grüß als data_sm", encoding="ucs2")
        wait_until(lambda: delivered(ids), timeout=30)
        wait_until(lambda: IncomingMessage.objects.count() == 2)
        wait_until(lambda: simulator.stats()["mo_acknowledged"] == 2)
        texts = set(IncomingMessage.objects.values_list("text", flat=True))
        assert texts == {"an answer as data_sm", "ein Grüß als data_sm"}
        assert Receipt.objects.filter(part__isnull=False, stat="DELIVRD").count() == 5
        stats = simulator.stats()
        assert stats["receipts_acknowledged"] == 5  # each answered data_sm_resp 0, once
        assert stats["receipts_sent"] == 5 and stats["mo_sent"] == 2
        assert stats["generic_nacks_received"] == 0 and stats["deliver_errors"] == 0
        assert running.error is None


def test_a_data_sm_receipt_with_only_its_tlvs_is_a_receipt():
    """Some SMSCs mark a data_sm receipt by its TLVs alone (esm_class 0)."""
    from smpp.pdu import decode_pdu
    from smpp_gateway.deliver import read_deliver
    from smpp_gateway.simulator.wire import data_sm

    pdu = data_sm(
        3,
        source_addr="4917000001",
        destination_addr="SENDER",
        receipted_message_id="ab12",
        message_state=5,
        network_error_code=b"\x03\x00\x01",
    )
    receipt = read_deliver(decode_pdu(pdu))
    assert receipt.smsc_id == "ab12" and receipt.message_state == 5
    assert receipt.tlvs["network_error_code"] == "030001"


# --- throttling and queue-full an operator can see --------------------------------------------


def scrape(client) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_throttling_is_summarised_in_the_log_and_shown_in_metrics_and_status(
    worker_on, caplog, client
):
    with smsc(max_rate=20.0) as simulator, caplog.at_level(logging.WARNING):
        running = worker_on(simulator)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        started = time.monotonic()
        ids = distinct(100, "throttled")
        wait_until(lambda: simulator.stats()["throttled"] > 0)
        wait_until(lambda: "submits refused in the last" in caplog.text, timeout=10)
        summaries = [r.getMessage() for r in caplog.records if "submits refused" in r.getMessage()]
        assert "x ESME_RTHROTTLED" in summaries[0] and "send rate now " in summaries[0]
        assert all(r.levelno == logging.WARNING for r in caplog.records if "refused" in r.msg)
        wait_until(lambda: delivered(ids), timeout=40)
        # Rate-limited: a few summaries for ~100 throttled answers, not one line each.
        summaries = [r for r in caplog.records if "submits refused" in r.getMessage()]
        assert len(summaries) <= 2 + (time.monotonic() - started) / 10
        assert len(summaries) < simulator.stats()["throttled"]
        worker_id = running.worker.worker_id
        wait_until(
            lambda: (LinkStatus.objects.get(worker_id=worker_id).health or {}).get("throttled")
        )
        time.sleep(1.2)  # a heartbeat after the last answer
        samples = scrape(client)
        labels = (("bind", "0"), ("connector", "default"), ("worker_id", worker_id))
        throttled = samples[("smsapi_link_throttled_total", labels)]
        assert throttled == simulator.stats()["throttled"]
        assert samples[("smsapi_link_rate_limit", labels)] > 0
        (link,) = client.get("/v1/status").json()["link"]
        assert link["health"]["throttled"] == throttled and link["health"]["rate"] > 0
        assert link["detail"] == f"127.0.0.1:{simulator.port} as smsapi"


def test_queue_full_is_summarised_and_counted(worker_on, caplog, client):
    with smsc(queue_full_for=3.0) as simulator, caplog.at_level(logging.WARNING):
        running = worker_on(simulator)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        ids = distinct(10, "queue full")
        wait_until(lambda: "x ESME_RMSGQFUL" in caplog.text, timeout=10)
        worker_id = running.worker.worker_id
        wait_until(
            lambda: (
                (LinkStatus.objects.get(worker_id=worker_id).health or {}).get("queue_full") == 10
            )
        )
        (link,) = client.get("/v1/status").json()["link"]
        assert link["health"]["queue_full"] == 10 and link["state"] == "bound"
        samples = scrape(client)
        labels = (("bind", "0"), ("connector", "default"), ("worker_id", worker_id))
        assert samples[("smsapi_link_queue_full_total", labels)] == 10
        # The session takes submits again after 3 s: sent again after their delay (10 s).
        wait_until(lambda: delivered(ids), timeout=40)
        assert simulator.stats()["binds"] == 1  # busy for a moment is not stalled


# --- a session that refuses every submit ---------------------------------------------------------


def test_a_session_refusing_every_submit_is_reported_and_rebound(worker_on, caplog, client):
    """The SMSC answers enquire_link but 0x14 to every submit on this session; a new
    session works (as after a restart of the SMSC). Readiness says so meanwhile."""
    with smsc(queue_full_for=-1) as simulator, caplog.at_level(logging.WARNING):
        worker_on(simulator, stall_rebind_after=2.0)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        ids = []
        states_seen = set()
        deadline = time.monotonic() + 20
        while "SMPP session stalled" not in caplog.text and time.monotonic() < deadline:
            ids += distinct(1, f"refused {len(ids)}")  # refusals keep coming
            states_seen.update(LinkStatus.objects.values_list("state", flat=True))
            if "stalled" in states_seen:
                break
            time.sleep(0.3)
        wait_until(lambda: "SMPP session stalled" in caplog.text)
        (line,) = [r for r in caplog.records if "SMPP session stalled" in r.getMessage()][:1]
        assert line.levelno == logging.ERROR
        assert "every submit refused for" in line.getMessage()
        assert "ESME_RMSGQFUL" in line.getMessage()
        simulator.set_config(queue_full_for=0)  # the SMSC is itself again for new sessions
        wait_until(lambda: simulator.stats()["binds"] >= 2)
        wait_until(lambda: LinkStatus.objects.get().state == "bound", timeout=20)
        wait_until(lambda: delivered(ids), timeout=60)
        assert client.get("/readyz").status_code == 200


def test_readiness_names_a_stalled_worker(client):
    from django.utils import timezone

    now = timezone.now()
    LinkStatus.objects.create(
        worker_id="w1",
        state="stalled",
        detail="every submit refused for 61 s (the last: ESME_RMSGQFUL)",
        health={"queue_full": 41, "refusing_for": 61.0},
        smsc="127.0.0.1:2775",
        changed_at=now,
        heartbeat_at=now,
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["smpp"] == "stalled"
    assert body["error"] == (
        "no SMPP worker is bound (worker w1 is stalled: every submit refused for 61 s "
        "(the last: ESME_RMSGQFUL))"
    )


# --- a bind answered by closing the socket ------------------------------------------------------


def test_a_bind_answered_by_closing_the_socket_names_the_likely_causes(worker_on, caplog):
    with smsc(bind_close=True) as simulator, caplog.at_level(logging.WARNING):
        running = worker_on(simulator)
        wait_until(lambda: "closed the connection without answering the bind" in caplog.text)
        (record,) = [r for r in caplog.records if "without answering the bind" in r.getMessage()][
            :1
        ]
        assert record.levelno == logging.ERROR
        message = record.getMessage()
        for cause in ("SMPP_PASSWD", "SMPP_SYSTEM_TYPE", "source address", "IP address", "TLS"):
            assert cause in message
        status = LinkStatus.objects.get(worker_id=running.worker.worker_id)
        assert status.state in ("disconnected", "connecting")
        simulator.set_config(bind_close=False)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        (message_id,) = distinct(1, "after the bind")
        wait_until(lambda: delivered([message_id]))


# --- bells that find a full channel -------------------------------------------------------------


async def test_a_bell_to_a_full_channel_is_dropped_quietly_and_counted(caplog):
    from channels.layers import get_channel_layer

    from messaging.notify import BELLS, publish
    from messaging.store import Notifications

    layer = get_channel_layer()
    # A channel of its own (channels_redis counts one process's new_channel() together).
    full = f"test.bells.full.{time.monotonic_ns()}"
    reading = await layer.new_channel()
    for _ in range(layer.capacity):
        await layer.send(full, {"type": "filler"})
    before = BELLS.dropped
    notes = Notifications()
    notes.waiters = {full: [{"id": 1}], reading: [{"id": 2}]}
    with caplog.at_level(logging.DEBUG, logger="messaging.notify"):
        await publish(notes)
    assert BELLS.dropped == before + 1
    assert (await layer.receive(reading))["answers"] == [{"id": 2}]  # the others get theirs
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
