"""GET /v1/sse through a real daphne process, read as a browser reads it.

The events are written by this process with the store's functions, into the
test database that the server reads too. With the in-memory channel layer the
bells rung here cannot reach the server, so those tests rely on its polling;
the Redis tests turn polling off and so prove the bell path.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from messaging.models import Event
from messaging.notify import publish
from messaging.store import Notifications
from tests.live import SseClient, WebSocketClosed, WsClient, add_events, daphne, make_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
NEVER = "3600"  # seconds: a poll interval (or keep-alive) that never comes in a test


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne with the in-memory layer: bells from this process cannot reach it,
    so it finds events by polling; keep-alive every half second."""
    with (
        django_db_blocker.unblock(),
        daphne(tmp_path_factory.mktemp("sse"), SSE_KEEPALIVE="0.5", REDIS_URL="") as s,
    ):
        yield s


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne on a Redis layer with polling and keep-alive off: only bells wake it."""
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    env = {"REDIS_URL": REDIS_URL, "EVENTS_POLL_INTERVAL": NEVER, "SSE_KEEPALIVE": NEVER}
    with django_db_blocker.unblock(), daphne(tmp_path_factory.mktemp("sse-redis"), **env) as s:
        yield s


@pytest.fixture
def redis_layer(settings):
    """This process rings its bells through the same Redis as the server."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }


def connect(server, path: str, **headers) -> SseClient:
    """Open a stream and read up to its ``retry:`` line: from then on it is listening."""
    client = SseClient(server.port, path, headers=headers)
    block = client.next_block()
    assert block.lines == ["retry: 3000"]
    return client


def test_headers_retry_then_lower_case_id_and_data(server):
    ids = add_events(3)
    client = connect(server, f"/v1/sse?since={ids[0] - 1}")
    try:
        response = client.response
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        assert response.getheader("Cache-Control") == "no-cache"
        assert response.getheader("X-Accel-Buffering") == "no"
        events = client.events(3)
        for event_id, event in zip(ids, events, strict=True):
            assert event.lines == [f"id: {event_id}", f"data: {event.data}"]
            data = event.json
            assert list(data)[:4] == ["src", "dst", "text", "type"]
            assert data["type"] == "mo"
            assert data["text"].endswith("ünïcode\nsecond line")  # one data line all the same
            assert data["event_id"] == event_id
        live = add_events(2)
        assert [int(e.id) for e in client.events(2)] == live
    finally:
        client.close()


def test_without_since_only_new_events(server):
    add_events(2)
    client = connect(server, "/v1/sse")
    try:
        new = add_events(1)
        assert int(client.next_event().id) == new[0]
    finally:
        client.close()


def test_last_event_id_replays_exactly_the_missed_events(server):
    first = add_events(4)
    client = connect(server, f"/v1/sse?since={first[0] - 1}")
    seen = [int(e.id) for e in client.events(2)]
    client.close()
    assert seen == first[:2]

    missed = add_events(3)
    # The browser reconnects to the same URL, adding Last-Event-ID: the header wins.
    client = connect(server, f"/v1/sse?since={first[0] - 1}", **{"Last-Event-ID": str(seen[-1])})
    try:
        expected = first[2:] + missed
        assert [int(e.id) for e in client.events(len(expected))] == expected
        later = add_events(1)
        assert int(client.next_event().id) == later[0]  # nothing came twice before it
    finally:
        client.close()


def test_filters_by_type_and_message(server):
    m1, m2 = make_message(), make_message()
    before = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    status1 = add_events(1, "status", m1)
    receipt1 = add_events(1, "receipt", m1)
    add_events(1, "mo")
    receipt2 = add_events(1, "receipt", m2)

    client = connect(server, f"/v1/sse?since={before}&type=receipt")
    try:
        events = client.events(2)
        assert [int(e.id) for e in events] == receipt1 + receipt2
        assert {e.json["type"] for e in events} == {"receipt"}
        add_events(1, "mo")
        live = add_events(1, "receipt", m1)
        assert int(client.next_event().id) == live[0]
    finally:
        client.close()

    client = connect(server, f"/v1/sse?since={before}&type=receipt,status&id={m1.pk}")
    try:
        events = client.events(3)
        assert [int(e.id) for e in events] == status1 + receipt1 + live
        assert all(e.json["id"] == str(m1.pk) for e in events)
    finally:
        client.close()


def test_bad_filter_is_a_400(server):
    client = SseClient(server.port, "/v1/sse?type=sms")
    try:
        assert client.response.status == 400
        body = json.loads(client.response.read())
        assert body == {"error": 'invalid parameter "type"="sms"; supported: receipt, mo, status'}
    finally:
        client.close()


def test_keep_alive_comment_while_quiet(server):
    client = connect(server, "/v1/sse")
    try:
        block = client.next_block()
        assert block.lines == [": keep-alive"]
    finally:
        client.close()


def test_events_from_the_store_functions(server):
    """An incoming message stored by the store reaches the stream with its decoded text."""
    from messaging.store import FragmentIn, store_fragments

    client = connect(server, "/v1/sse?type=mo")
    try:
        async_to_sync(publish)(
            store_fragments(
                [
                    FragmentIn(
                        src="5551234",
                        dst="smsapi",
                        data_coding=8,
                        payload="héllo €".encode("utf-16-be"),
                    )
                ]
            )
        )
        data = client.next_event().json
        assert (data["src"], data["dst"], data["text"], data["type"]) == (
            "5551234",
            "smsapi",
            "héllo €",
            "mo",
        )
    finally:
        client.close()


def burst(count: int = 1000, chunk: int = 100, silent: frozenset[int] = frozenset({3, 4, 7})):
    """Bulk-insert ``count`` events in chunks of ``chunk``; ring the bell after each
    chunk except the ``silent`` ones (the bell is a hint: a later one covers them)."""
    ids: list[int] = []
    now = timezone.now()
    for n in range(count // chunk):
        with transaction.atomic():
            created = Event.objects.bulk_create(
                Event(
                    type="receipt",
                    payload={"type": "receipt", "src": "555", "dst": "smsapi", "text": f"{n}/{i}"},
                    created_at=now,
                )
                for i in range(chunk)
            )
        ids += [event.pk for event in created]
        if n not in silent:
            async_to_sync(publish)(Notifications(last_event_id=ids[-1]))
    return ids


def read_all(sse: SseClient, ws: WsClient, count: int) -> tuple[list[int], list[int]]:
    """Every event from both clients; the socket's calls are answered one by one."""
    from_sse = [int(e.id) for e in sse.events(count)]
    from_ws = []
    for call_id in range(count):
        call = ws.receive_json()
        assert (call["method"], call["id"]) == ("SM.Deliver", call_id)
        from_ws.append(call["params"][0]["event_id"])
        ws.send_json({"id": call_id, "result": True, "error": None})
    return from_sse, from_ws


def test_a_burst_arrives_complete_and_in_order(server):
    sse = connect(server, "/v1/sse")
    ws = WsClient(server.port, "/v1/ws/jsonrpc/events")
    try:
        ids = burst()
        from_sse, from_ws = read_all(sse, ws, len(ids))
        assert from_sse == ids
        assert from_ws == ids
    finally:
        sse.close()
        ws.close()


def test_bells_through_redis_wake_the_streams(redis_server, redis_layer):
    """Polling is off in this server: only bells through Redis can deliver these."""
    sse = connect(redis_server, "/v1/sse")
    ws = WsClient(redis_server.port, "/v1/ws/jsonrpc/events")
    try:
        ids = burst(silent=frozenset({0, 5, 6}))  # the last chunk rings
        from_sse, from_ws = read_all(sse, ws, len(ids))
        assert from_sse == ids
        assert from_ws == ids
    finally:
        sse.close()
        ws.close()


def test_a_client_that_goes_away_leaves_the_group(redis_server):
    """Under daphne, Django notices the disconnect and the stream cleans up after itself."""
    import redis

    store = redis.Redis.from_url(REDIS_URL)
    members = lambda: set(store.zrange("asgi:group:events", 0, -1))  # noqa: E731
    before = members()
    client = connect(redis_server, "/v1/sse")
    mine = members() - before
    assert len(mine) == 1
    client.close()
    deadline = time.monotonic() + 10
    while mine & members() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mine & members()


def test_events_socket_through_daphne_closes_a_silent_client(tmp_path):
    """The ack timeout under a real server: close code 4008, then resume with ?since."""
    ids = add_events(2)
    with daphne(tmp_path, EVENTS_ACK_TIMEOUT="0.3", REDIS_URL="") as server:
        ws = WsClient(server.port, f"/v1/ws/jsonrpc/events?since={ids[0] - 1}")
        try:
            assert ws.receive_json()["params"][0]["event_id"] == ids[0]
            with pytest.raises(WebSocketClosed) as closed:
                ws.receive_json()  # we never answer
            assert closed.value.code == 4008
        finally:
            ws.close()
        ws = WsClient(server.port, f"/v1/ws/jsonrpc/events?since={ids[0]}")
        try:
            call = ws.receive_json()
            assert (call["id"], call["params"][0]["event_id"]) == (0, ids[1])
        finally:
            ws.close()


# --- the cursor and concurrent writers -------------------------------------------------


class OpenWriter:
    """Stores one event in a transaction of its own, on another connection, and keeps
    it open until told to commit or roll back: an id taken but not yet visible."""

    def __init__(self) -> None:
        import threading

        self.taken = threading.Event()
        self.finish = threading.Event()
        self.commit = True
        self.event_id: int | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.taken.wait(10)

    def _run(self) -> None:
        from django.db import connection as thread_connection

        class RollBack(Exception):
            pass

        try:
            with transaction.atomic():
                self.event_id = Event.objects.create(
                    type="mo", payload={"type": "mo", "text": "slow"}, created_at=timezone.now()
                ).pk
                self.taken.set()
                self.finish.wait(10)
                if not self.commit:
                    raise RollBack
        except RollBack:
            pass
        finally:
            thread_connection.close()

    def end(self, commit: bool) -> None:
        self.commit = commit
        self.finish.set()
        self.thread.join(10)


@pytest.fixture
def concurrent_writers():
    from django.db import connection as main_connection

    if main_connection.vendor == "sqlite":
        pytest.skip("SQLite writers are serialised: ids always become visible in order")


@pytest.mark.parametrize("types", [(), ("mo",)], ids=["all", "filtered"])
def test_the_cursor_waits_for_an_id_still_in_flight(concurrent_writers, types):
    # Unfiltered, the cursor reads whole events; filtered (and the webhook
    # planner), it first moves over the ids alone (``advance``).
    from messaging.events import EventCursor, EventFilter

    before = add_events(1)[0]
    cursor = EventCursor(before, EventFilter(types=types), gap_grace=3600)
    writer = OpenWriter()
    after = add_events(1)[0]  # committed, but behind the writer's id
    assert writer.event_id < after
    assert cursor.read() == []  # not past the hole: the id there may still come
    writer.end(commit=True)
    assert [event.pk for event in cursor.read()] == [writer.event_id, after]


def test_the_cursor_passes_a_rolled_back_id_after_the_grace(concurrent_writers):
    from messaging.events import EventCursor

    before = add_events(1)[0]
    cursor = EventCursor(before, gap_grace=0.3)
    writer = OpenWriter()
    writer.end(commit=False)
    after = add_events(1)[0]
    assert cursor.read() == []
    time.sleep(0.4)
    assert [event.pk for event in cursor.read()] == [after]
