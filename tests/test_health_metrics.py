"""/healthz, /readyz and /metrics, against the real store."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from messaging import store
from messaging.api.metrics import quantile
from messaging.models import LinkStatus
from messaging.outbound import split_for_smsc
from messaging.store import NewMessage, SubmitOutcome
from tests.factories import receipt

pytestmark = [pytest.mark.store, pytest.mark.django_db]
# The readiness check and the API's views run their store work on threads of their
# own (messaging.orm_thread), as in production: what a test writes for them to
# read, or reads back after them, is committed.
COMMITTED = pytest.mark.django_db(transaction=True)


def link(worker_id: str, state: str, heartbeat_age: float = 0.0, detail: str = "") -> LinkStatus:
    now = timezone.now()
    return LinkStatus.objects.create(
        worker_id=worker_id,
        state=state,
        detail=detail,
        smsc="127.0.0.1:2775",
        changed_at=now - timedelta(seconds=heartbeat_age),
        heartbeat_at=now - timedelta(seconds=heartbeat_age),
    )


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# --- health ------------------------------------------------------------------------------


def test_liveness_answers_while_the_process_serves(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_not_ready_when_no_worker_has_reported(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "smpp": "failed"}
    assert "no SMPP worker has reported" in body["error"]
    assert client.get("/healthz", {"ready": "1"}).status_code == 503


@COMMITTED
def test_not_ready_while_the_only_worker_is_disconnected(client):
    link("w1", "disconnected", detail="connection refused")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"] == (
        "no SMPP worker is bound (worker w1 is disconnected: connection refused)"
    )


@COMMITTED
def test_not_ready_when_the_bound_worker_stopped_beating(client, settings):
    settings.HEALTH_HEARTBEAT_MAX_AGE = 15
    link("w1", "bound", heartbeat_age=60)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "no SMPP worker has reported for 15 s" in response.json()["error"]


@COMMITTED
def test_ready_with_a_bound_worker_and_a_fresh_heartbeat(client):
    link("w0", "disconnected", heartbeat_age=1)
    link("w1", "bound", heartbeat_age=1)
    for response in (client.get("/readyz"), client.get("/healthz", {"ready": "1"})):
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "checks": {"database": "ok", "smpp": "ok", "routes": "ok"},
            "bound_workers": ["w1"],
        }


# --- metrics -----------------------------------------------------------------------------


@COMMITTED
def test_a_send_moves_the_queue_metrics(client):
    before = scrape(client)
    response = client.post("/v1/send", {"dst": "5550001", "text": "x" * 200, "wait": "0"})
    assert response.status_code == 202
    after = scrape(client)
    assert value(after, "smsapi_messages", state="queued") == (
        value(before, "smsapi_messages", state="queued") + 1
    )
    # Two parts: both queued and due.
    assert value(after, "smsapi_queue_depth") == value(before, "smsapi_queue_depth") + 2
    assert value(after, "smsapi_store_up") == 1


def test_store_metrics_follow_the_worker(client):
    store.create_messages(
        [NewMessage(dst="5550001", text="hi", split=split_for_smsc("hi", "auto"))]
    )
    store.create_messages(
        [NewMessage(dst="5550002", text="ho", split=split_for_smsc("ho", "auto"))]
    )
    link("w1", "bound")
    claimed = store.claim_parts("w1", 10, 60)
    assert len(claimed) == 2
    samples = scrape(client)
    assert value(samples, "smsapi_window_in_use", worker_id="w1") == 2
    assert value(samples, "smsapi_queue_depth") == 0
    labels = {"worker_id": "w1", "connector": "default", "bind": "0"}
    assert value(samples, "smsapi_link_up", **labels, smsc="127.0.0.1:2775") == 1
    assert value(samples, "smsapi_link_state", **labels, state="bound") == 1
    assert value(samples, "smsapi_link_state", **labels, state="disconnected") == 0
    assert value(samples, "smsapi_connector_links_bound", connector="default") == 1
    assert value(samples, "smsapi_workers_bound") == 1

    first, second = sorted(claimed, key=lambda c: c.message_id)
    store.record_submit_outcomes(
        [
            SubmitOutcome(first.part_id, SubmitOutcome.SUBMITTED, command_status=0, smsc_id="a1"),
            SubmitOutcome(
                second.part_id,
                SubmitOutcome.RETRY,
                command_status=0x58,
                retry_at=timezone.now() + timedelta(minutes=5),
            ),
        ]
    )
    store.store_receipts([receipt("a1"), receipt("unknown-id")])
    samples = scrape(client)
    assert value(samples, "smsapi_window_in_use", worker_id="w1") == 0
    assert value(samples, "smsapi_parts_throttled") == 1
    assert value(samples, "smsapi_parts_deferred") == 1
    assert value(samples, "smsapi_queue_depth") == 0
    assert value(samples, "smsapi_messages", state="delivered") == 1
    assert value(samples, "smsapi_messages", state="queued") == 1
    assert value(samples, "smsapi_receipts_unmatched") == 1
    assert value(samples, "smsapi_submit_latency_seconds_samples") == 1
    assert value(samples, "smsapi_receipt_latency_seconds_samples") == 1
    assert value(samples, "smsapi_submit_latency_seconds", quantile="0.5") >= 0
    assert value(samples, "smsapi_last_event_id") > 0


def test_a_silent_worker_is_reported_down(client, settings):
    settings.HEALTH_HEARTBEAT_MAX_AGE = 15
    link("w1", "bound", heartbeat_age=60)
    samples = scrape(client)
    labels = {"worker_id": "w1", "connector": "default", "bind": "0"}
    assert value(samples, "smsapi_link_up", **labels, smsc="127.0.0.1:2775") == 0
    assert value(samples, "smsapi_link_heartbeat_age_seconds", **labels) >= 60
    assert value(samples, "smsapi_workers_bound") == 0


def test_openmetrics_when_the_scraper_asks_for_it(client):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")
    plain = client.get("/metrics", HTTP_ACCEPT="text/html")
    assert plain.status_code == 200
    assert plain["Content-Type"].startswith("text/plain")


def test_nearest_rank_quantile():
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50
    assert quantile(values, 0.99) == 99
    assert quantile(values, 1.0) == 100
    assert quantile([3.0], 0.5) == 3
    assert math.isnan(quantile([], 0.5))


def test_link_health_read_back_from_a_row_is_not_trusted():
    """LinkStatus.health is read as any row is: unknown keys, strings, booleans, NaN and
    infinities are left out, whatever wrote them."""
    from messaging.health import LinkHealth

    assert LinkHealth.from_stored(None) is None
    assert LinkHealth.from_stored(["throttled", 3]) is None
    read = LinkHealth.from_stored(
        {
            "throttled": 3,
            "queue_full": "7",
            "refused": True,
            "rate": float("nan"),
            "sent": float("inf"),
            "refusing_for": 2,
            "bells_dropped": 1.9,
            "extra": 1,
        }
    )
    assert read == LinkHealth(throttled=3, refusing_for=2.0, bells_dropped=1)
