"""Issue 21, what a newcomer meets in the service's first hour (start, stop, what it reports).

The service runs as a real ``manage.py serve`` process with its embedded simulator
where the behaviour lives there (the SMSC label, the stop's log level, the access
log); the event streams are read through a real daphne as an old sms-api-server
client would read them.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from messaging.api.smsc_answers import LinkWatch
from messaging.api.status_view import live_links
from messaging.events import DEFAULT_STREAM_TYPES, event_data, parse_filter
from messaging.models import Event, LinkStatus, Message
from tests.conftest import free_port, wait_until
from tests.live import SseClient, add_events, daphne, database_url, make_message
from tests.test_supervision import Command, get_json

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]


def link(worker_id: str, state: str, age: float = 0.0) -> LinkStatus:
    at = timezone.now() - timedelta(seconds=age)
    return LinkStatus.objects.create(
        worker_id=worker_id, state=state, smsc="127.0.0.1:1", changed_at=at, heartbeat_at=at
    )


# --- start-up and exit, in a real `serve` -----------------------------------------------------


def test_serve_labels_its_smsc_logs_a_clean_stop_at_info_and_writes_an_access_log(tmp_path):
    """``serve --simulator PORT`` with SMPP_ADDR at its default: the link is labelled
    with the address actually bound; Ctrl-C's disconnection is INFO; every request
    has an access-log line on standard output, its api_key redacted."""
    http_port, smsc_port = free_port(), free_port()
    serve = Command(
        tmp_path,
        "serve",
        "--port",
        str(http_port),
        "--simulator",
        str(smsc_port),
        "--no-webhooks",
        DATABASE_URL=database_url(),
        SMPP_ADDR="",
    )
    try:
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists(), timeout=30)
        assert LinkStatus.objects.get().smsc == f"127.0.0.1:{smsc_port}"
        status = get_json(http_port, "/v1/status?api_key=sk_secret_in_the_url")
        assert status is not None
        assert [entry["smsc"] for entry in status[1]["link"]] == [f"127.0.0.1:{smsc_port}"]
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
        assert f'smsc="127.0.0.1:{smsc_port}"' in metrics
        assert 'smsc="localhost:2775"' not in metrics
        wait_until(lambda: '"GET /metrics" 200' in serve.output(), timeout=10)
        serve.process.send_signal(signal.SIGINT)
        assert serve.wait() == 0, serve.output()
    finally:
        serve.kill()
    output = serve.output()
    assert f"SMS API listening on http://127.0.0.1:{http_port}/" in output
    assert "INFO smpp_gateway.worker: SMPP disconnected: unbound: the worker is stopping" in output
    assert "WARNING smpp_gateway.worker: SMPP disconnected" not in output, output
    assert '"GET /v1/status?api_key=REDACTED" 200' in output, output
    assert "sk_secret_in_the_url" not in output
    assert LinkStatus.objects.get().state == "stopped"


# --- what the service reports ------------------------------------------------------------------


def test_a_cleanly_stopped_worker_does_not_count_against_the_bound_total(client):
    link("old-1", "stopped", age=600)
    link("old-2", "stopped", age=1)
    link("new", "bound")
    body = client.get("/v1/status").json()
    assert [(entry["worker_id"], entry["state"]) for entry in body["link"]] == [("new", "bound")]


def test_after_a_full_stop_the_stopped_worker_shows_a_while_then_not():
    now = timezone.now()
    recent, old = link("a", "stopped", age=1), link("b", "stopped", age=600)
    assert live_links([recent, old], now) == [recent]
    assert live_links([old], now) == []
    # Anything else a worker reports (even down) still counts: it is not a clean stop.
    down = link("c", "disconnected", age=600)
    assert live_links([old, down], now) == [down]


def test_a_send_with_no_worker_bound_does_not_wait_for_the_smsc(client):
    """The default send waits for the SMSC only when some worker is bound: a waiting
    send names its answer channel on the message; this one was answered at once."""
    response = client.post("/v1/send", {"dst": "5550001", "text": "hi"})
    assert response.status_code == 202
    assert Message.objects.get(pk=response.json()["id"]).notify_channel in ("", None)


def test_the_link_watch_reads_the_heartbeats_at_most_once_per_refresh():
    async def check() -> list[bool]:
        watch = LinkWatch(refresh=3600)
        first = await watch.bound()
        await asyncio.to_thread(link, "w", "bound")  # bound now, but the answer is kept
        second = await watch.bound()
        watch.refresh = 0
        third = await watch.bound()
        return [first, second, third]

    assert asyncio.run(check()) == [False, False, True]


def test_a_stale_bound_heartbeat_is_not_bound():
    async def bound() -> bool:
        return await LinkWatch(refresh=0).bound()

    link("w", "bound", age=3600)
    assert asyncio.run(bound()) is False


def test_query_of_a_message_never_submitted_does_not_say_enroute(client):
    sent = client.post("/v1/send", {"dst": "5550001", "text": "hi", "wait": "0"}).json()
    body = client.get(f"/v1/query?id={sent['id']}").json()
    assert body["status"] == "queued" and body["message_state"] == "SCHEDULED"


def test_ucs2_forced_by_is_a_list_in_send_answers_and_the_message_log(client):
    sent = client.post("/v1/send", {"dst": "5550001", "text": "hi 😀", "wait": "0"}).json()
    assert sent["ucs2_forced_by"] == ["😀"]
    assert client.get(f"/v1/messages/{sent['id']}").json()["ucs2_forced_by"] == ["😀"]
    listed = client.get("/v1/messages").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["ucs2_forced_by"] for row in rows if row["id"] == sent["id"]] == [["😀"]]
    plain = client.post("/v1/send", {"dst": "5550001", "text": "plain", "wait": "0"}).json()
    assert client.get(f"/v1/messages/{plain['id']}").json()["ucs2_forced_by"] == []


def test_every_event_carries_the_time_it_was_recorded():
    (event_id,) = add_events(1, "receipt", make_message(), ring=False)
    event = Event.objects.get(pk=event_id)
    data = event_data(event)
    assert datetime.fromisoformat(data["at"]) == event.created_at
    assert list(data)[-2:] == ["at", "event_id"]


# --- compatibility with sms-api-server clients -------------------------------------------------


def test_the_default_stream_types_are_the_old_servers():
    assert parse_filter(None, None).types == DEFAULT_STREAM_TYPES == ("receipt", "mo")
    assert parse_filter("", None).types == ("receipt", "mo")
    assert parse_filter("status", None).types == ("status",)


def test_an_old_style_sse_client_sees_only_receipts_and_incoming(tmp_path):
    message = make_message()
    with daphne(tmp_path, EVENTS_POLL_INTERVAL="0.2") as server:
        old = SseClient(server.port, "/v1/sse")  # no ?type=, as sms-api-server's clients
        new = SseClient(server.port, "/v1/sse?type=receipt,mo,status")
        try:
            assert old.next_block().lines == ["retry: 3000"]
            assert new.next_block().lines == ["retry: 3000"]
            status = add_events(2, "status", message)
            receipt = add_events(1, "receipt", message)
            mo = add_events(1, "mo")
            seen = old.events(2)
            assert [int(e.id) for e in seen] == receipt + mo
            assert [e.json["type"] for e in seen] == ["receipt", "mo"]
            assert all(e.json["at"] for e in seen)
            everything = status + receipt + mo
            assert [int(e.id) for e in new.events(4)] == everything
        finally:
            old.close()
            new.close()


async def test_an_old_style_events_socket_gets_only_receipts_and_incoming():
    from channels.db import database_sync_to_async

    from tests.test_websocket import EVENTS, open_socket, receive_call

    def history() -> tuple[list[int], list[int]]:
        message = make_message()
        status = add_events(2, "status", message)
        return status, add_events(1, "receipt", message) + add_events(1, "mo")

    status, old_types = await database_sync_to_async(history)()
    ws = await open_socket(f"{EVENTS}?since={status[0] - 1}")  # no ?type=
    try:
        seen = []
        for n in range(2):
            call = await receive_call(ws)
            seen.append(call["params"][0])
            await ws.send_json_to({"id": n, "result": True, "error": None})
        assert [event["event_id"] for event in seen] == old_types
        assert [event["type"] for event in seen] == ["receipt", "mo"]
        assert await ws.receive_nothing(timeout=0.3)
    finally:
        await ws.disconnect()
