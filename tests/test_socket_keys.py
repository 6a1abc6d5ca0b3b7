"""API keys on open connections: a revoked key stops its sockets and streams
within seconds, and frames that are no call count against the key's rate.

The revocation tests run a real daphne process (``KEY_RECHECK_INTERVAL`` 0.5 s);
the rate tests run the ASGI application in process.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from messaging import api_keys
from messaging.models import Message
from smsapi.asgi import application
from tests.live import SseClient, WebSocketClosed, WsClient, add_events, daphne, make_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

RECHECK = 0.5
WITHIN = 5.0  # seconds a revoked key's connections may take to close


def test_revoked_among_names_revoked_and_missing_keys():
    active = api_keys.create_key("active").api_key
    revoked = api_keys.create_key("revoked").api_key
    api_keys.revoke_key(revoked.prefix)
    assert api_keys.revoked_among([active.pk, revoked.pk, 987654]) == {revoked.pk, 987654}
    assert api_keys.revoked_among([]) == set()


@pytest.fixture
def server(tmp_path):
    with daphne(
        tmp_path,
        SMSAPI_AUTH="required",
        REDIS_URL="",
        EVENTS_POLL_INTERVAL="0.2",
        KEY_RECHECK_INTERVAL=str(RECHECK),
    ) as s:
        yield s


def ends_within(read, seconds: float) -> tuple[str, float]:
    """Call ``read`` until the connection ends; how it ended and after how long."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            read()
        except WebSocketClosed as closed:
            return f"closed {closed.code}", time.monotonic() - started
        except (EOFError, ConnectionError):
            return "ended", time.monotonic() - started
        except TimeoutError:
            continue
    return "open", time.monotonic() - started


def test_revoking_a_key_closes_its_sockets_and_streams(server):
    issued = api_keys.create_key("alice")
    other = api_keys.create_key("bob")
    message = make_message()
    Message.objects.filter(pk=message.pk).update(api_key=issued.api_key)
    first = add_events(1, "status", message, ring=False)[0]

    rpc = WsClient(server.port, f"/v1/ws/jsonrpc?api_key={issued.key}", timeout=1)
    # Status events are carried when asked for (the default streams: receipts and incoming).
    query = f"since={first - 1}&type=receipt,mo,status&api_key={issued.key}"
    events = WsClient(server.port, f"/v1/ws/jsonrpc/events?{query}")
    sse = SseClient(server.port, f"/v1/sse?{query}", timeout=1)
    bystander = WsClient(server.port, f"/v1/ws/jsonrpc?api_key={other.key}")
    try:
        # All three work before the revocation.
        rpc.send_json({"method": "SM.Query", "params": [{"id": str(message.pk)}], "id": 1})
        assert rpc.receive_json()["result"]["id"] == str(message.pk)
        call = events.receive_json()
        assert call["params"][0]["event_id"] == first
        events.send_json({"id": call["id"], "result": True, "error": None})
        assert int(sse.next_event().id) == first
        events.sock.settimeout(1)

        api_keys.revoke_key(issued.api_key.prefix)
        results: dict[str, tuple[str, float]] = {}

        def watch(name, read):
            results[name] = ends_within(read, WITHIN + 2)

        def read_events():
            call = events.receive_json()  # answered: only the revocation may stop it
            events.send_json({"id": call["id"], "result": True, "error": None})

        threads = [
            threading.Thread(target=watch, args=("rpc", rpc.receive_json)),
            threading.Thread(target=watch, args=("events", read_events)),
            threading.Thread(target=watch, args=("sse", sse.next_event)),
        ]
        for thread in threads:
            thread.start()
        # Events of the key stored after the revocation are not its business any more.
        add_events(3, "status", message, ring=False)
        for thread in threads:
            thread.join(WITHIN + 5)

        assert results["rpc"][0] == "closed 4401"
        assert results["events"][0] == "closed 4401"
        assert results["sse"][0] == "ended"
        assert all(seconds < WITHIN for _, seconds in results.values()), results

        # Another key's socket goes on.
        bystander.send_json({"method": "SM.Query", "params": [{"id": "1"}], "id": 2})
        assert bystander.receive_json()["id"] == 2
    finally:
        for client in (rpc, events, bystander):
            client.close()
        sse.close()


# --- frames that are no call count against the key's rate --------------------------------


@pytest.fixture
def auth_required(settings):
    settings.SMSAPI_AUTH = "required"


async def test_bad_frames_and_unknown_methods_count_against_the_rate(auth_required):
    issued = await database_sync_to_async(api_keys.create_key)("flood", rate_limit=3)
    ws = WebsocketCommunicator(application, f"/v1/ws/jsonrpc?api_key={issued.key}")
    assert (await ws.connect())[0]
    try:
        for frame in ("not json", '{"method": "SM.Nope", "params": [{}], "id": 1}', "[1]"):
            await ws.send_to(text_data=frame)
            answer = await ws.receive_json_from(timeout=10)
            assert answer["error"].startswith("400 Bad Request: ")
        # The minute's three are used up: a fourth frame of any kind, and a real call, are 429.
        await ws.send_to(text_data="[" * 100)
        assert (await ws.receive_json_from(timeout=10))["error"] == (
            "429 Too Many Requests: rate limit of 3 requests a minute exceeded"
        )
        await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": 5})
        limited = await ws.receive_json_from(timeout=10)
        assert limited["id"] == 5 and limited["error"].startswith("429 Too Many Requests")
    finally:
        await ws.disconnect()


async def test_one_check_per_interval_for_all_open_sockets(auth_required, settings, monkeypatch):
    """The keys of every open socket are checked together, not socket by socket."""
    settings.KEY_RECHECK_INTERVAL = 0.2
    checks: list[set[int]] = []
    real = api_keys.revoked_among

    def counted(key_ids):
        checks.append(set(key_ids))
        return real(key_ids)

    monkeypatch.setattr(api_keys, "revoked_among", counted)
    alice = await database_sync_to_async(api_keys.create_key)("alice")
    bob = await database_sync_to_async(api_keys.create_key)("bob")
    sockets = []
    for key in (alice.key, alice.key, bob.key):
        for path in ("/v1/ws/jsonrpc", "/v1/ws/jsonrpc/events"):
            ws = WebsocketCommunicator(application, f"{path}?api_key={key}")
            assert (await ws.connect())[0]
            sockets.append(ws)
    try:
        await asyncio.sleep(1.1)
        assert 3 <= len(checks) <= 6  # one per interval, whatever the number of sockets
        assert checks[-1] == {alice.api_key.pk, bob.api_key.pk}
    finally:
        for ws in sockets:
            await ws.disconnect()
