"""The two WebSocket APIs, in process through the real ASGI application.

``/v1/ws/jsonrpc`` calls the real ``messaging.api.sending`` against the test database
(no worker runs, so a submit that waits for the SMSC waits in vain and ends 202).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from smsapi.asgi import application
from tests.live import add_events, make_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

RPC = "/v1/ws/jsonrpc"
EVENTS = "/v1/ws/jsonrpc/events"


async def open_socket(path: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def call(communicator: WebsocketCommunicator, request) -> dict:
    if isinstance(request, str):
        await communicator.send_to(text_data=request)
    else:
        await communicator.send_json_to(request)
    return await communicator.receive_json_from(timeout=10)


# --- /v1/ws/jsonrpc -------------------------------------------------------------------


async def test_bad_input_gets_an_error_answer_and_the_socket_stays():
    ws = await open_socket(RPC)
    try:
        answer = await call(ws, '{"method": "SM.Query", ')
        assert answer["id"] is None and answer["result"] is None
        assert answer["error"].startswith("400 Bad Request: invalid JSON: ")

        answer = await call(ws, "[1, 2]")
        assert answer == {
            "id": None,
            "result": None,
            "error": "400 Bad Request: invalid request: a JSON object expected",
        }

        answer = await call(ws, {"method": "SM.Nope", "params": [{}], "id": 7})
        assert answer == {
            "id": 7,
            "result": None,
            "error": '400 Bad Request: unknown method "SM.Nope"; supported: SM.Submit, SM.Query',
        }

        for params in ({"dst": "1"}, [], [{"dst": "1"}, {}], ["x"]):
            answer = await call(ws, {"method": "SM.Submit", "params": params, "id": "p"})
            assert answer["error"] == (
                '400 Bad Request: invalid parameter "params": a list with one object expected'
            )

        # Still open: a good call is answered.
        answer = await call(ws, {"method": "SM.Query", "params": [{"id": "1"}], "id": 8})
        assert answer["id"] == 8
    finally:
        await ws.disconnect()


async def test_submit_errors_carry_the_http_status_and_text():
    ws = await open_socket(RPC)
    try:
        answer = await call(ws, {"method": "SM.Submit", "params": [{"text": "hi"}], "id": 1})
        assert answer == {
            "id": 1,
            "result": None,
            "error": '400 Bad Request: missing parameter "dst": number of recipient',
        }
        answer = await call(
            ws,
            {
                "method": "SM.Submit",
                "params": [{"dst": "5550001", "text": "hi", "enc": "x"}],
                "id": 2,
            },
        )
        assert answer["error"].startswith('400 Bad Request: invalid parameter "enc"="x"')
    finally:
        await ws.disconnect()


async def test_query_errors():
    ws = await open_socket(RPC)
    try:
        answer = await call(ws, {"method": "SM.Query", "params": [{}], "id": "q"})
        assert answer["error"] == (
            '400 Bad Request: missing parameter "message_id": message id from send'
        )
        answer = await call(ws, {"method": "SM.Query", "params": [{"id": "987654"}], "id": "q"})
        assert answer == {
            "id": "q",
            "result": None,
            "error": '404 Not Found: message "987654" not found',
        }
    finally:
        await ws.disconnect()


async def test_submit_then_query_the_stored_message():
    ws = await open_socket(RPC)
    try:
        params = {"src": "bart", "dst": "5550001", "text": "hi there", "wait": "0"}
        answer = await call(ws, {"method": "SM.Submit", "params": [params], "id": 1})
        assert answer["error"] is None
        result = answer["result"]
        assert (result["status"], result["message_id"], result["parts"]) == ("queued", None, 1)

        answer = await call(ws, {"method": "SM.Query", "params": [{"id": result["id"]}], "id": 2})
        assert answer["error"] is None
        assert answer["result"]["id"] == result["id"]
        assert answer["result"]["status"] == "queued"
    finally:
        await ws.disconnect()


async def test_calls_run_concurrently_and_answers_come_out_of_order():
    # A worker says it is bound (else a send does not wait at all, issue 21) but none
    # runs: the submit waits its whole second for the SMSC.
    await database_sync_to_async(_a_silent_bound_worker)()
    ws = await open_socket(RPC)
    try:
        slow = {"dst": "5550001", "text": "slow", "wait": "1"}
        await ws.send_json_to({"method": "SM.Submit", "params": [slow], "id": "slow"})
        await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": "fast"})
        first = await ws.receive_json_from(timeout=10)
        second = await ws.receive_json_from(timeout=10)
        assert (first["id"], second["id"]) == ("fast", "slow")
        assert second["result"]["status"] == "queued"
    finally:
        await ws.disconnect()


def _a_silent_bound_worker() -> None:
    from django.utils import timezone

    from messaging.models import LinkStatus

    now = timezone.now()
    LinkStatus.objects.create(worker_id="silent", state="bound", changed_at=now, heartbeat_at=now)


# --- /v1/ws/jsonrpc/events ------------------------------------------------------------


async def receive_call(ws: WebsocketCommunicator) -> dict:
    message = await ws.receive_json_from(timeout=10)
    assert message["method"] == "SM.Deliver"
    assert len(message["params"]) == 1
    return message


async def test_calls_count_from_zero_and_wait_for_the_answer():
    ids = await database_sync_to_async(add_events)(3)
    ws = await open_socket(f"{EVENTS}?since={ids[0] - 1}")
    try:
        first = await receive_call(ws)
        assert first["id"] == 0
        event = first["params"][0]
        assert list(event)[:4] == ["src", "dst", "text", "type"]
        assert event["event_id"] == ids[0]
        # No second call before the first is answered, however long we wait...
        assert await ws.receive_nothing(timeout=0.3)
        # ...nor for an answer to some other call.
        await ws.send_json_to({"id": 5, "result": True, "error": None})
        assert await ws.receive_nothing(timeout=0.2)
        await ws.send_json_to({"id": 0, "result": True, "error": None})
        second = await receive_call(ws)
        assert (second["id"], second["params"][0]["event_id"]) == (1, ids[1])
        await ws.send_json_to({"id": 1, "result": "ok", "error": None})
        third = await receive_call(ws)
        assert (third["id"], third["params"][0]["event_id"]) == (2, ids[2])
    finally:
        await ws.disconnect()


async def test_new_events_only_by_default_and_live(settings):
    settings.EVENTS_POLL_INTERVAL = 3600  # only the bell can bring the live one
    await database_sync_to_async(add_events)(2)
    ws = await open_socket(EVENTS)
    try:
        assert await ws.receive_nothing(timeout=0.2)
        new = await database_sync_to_async(add_events)(1)
        message = await receive_call(ws)
        assert (message["id"], message["params"][0]["event_id"]) == (0, new[0])
    finally:
        await ws.disconnect()


async def test_silent_client_is_disconnected_and_resumes_with_since(settings):
    settings.EVENTS_ACK_TIMEOUT = 0.3
    ids = await database_sync_to_async(add_events)(2)
    ws = await open_socket(f"{EVENTS}?since={ids[0] - 1}")
    first = await receive_call(ws)
    assert first["params"][0]["event_id"] == ids[0]
    closed = await ws.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": 4008, "reason": "SM.Deliver not answered"}
    await ws.disconnect()

    # The client had not acknowledged ids[0]: it resumes after the last one it had.
    ws = await open_socket(f"{EVENTS}?since={ids[0] - 1}")
    try:
        again = await receive_call(ws)
        assert (again["id"], again["params"][0]["event_id"]) == (0, ids[0])
        await ws.send_json_to({"id": 0, "result": True, "error": None})
        assert (await receive_call(ws))["params"][0]["event_id"] == ids[1]
    finally:
        await ws.disconnect()


async def test_filters_and_a_bad_since():
    message = await database_sync_to_async(make_message)()
    await database_sync_to_async(add_events)(1, "mo")
    wanted = await database_sync_to_async(add_events)(1, "receipt", message)
    ws = await open_socket(f"{EVENTS}?since=0&type=receipt&id={message.pk}")
    try:
        delivered = await receive_call(ws)
        assert delivered["params"][0]["event_id"] == wanted[0]
        assert delivered["params"][0]["id"] == str(message.pk)
    finally:
        await ws.disconnect()

    ws = await open_socket(f"{EVENTS}?since=yesterday")
    closed = await ws.receive_output(timeout=10)
    assert closed["type"] == "websocket.close" and closed["code"] == 4400
    assert "since" in closed["reason"]
    await ws.disconnect()


async def test_an_answer_with_an_error_still_lets_the_next_event_go():
    ids = await database_sync_to_async(add_events)(2)
    ws = await open_socket(f"{EVENTS}?since={ids[0] - 1}")
    try:
        first = await receive_call(ws)
        await ws.send_to(text_data="not json")  # ignored, the socket stays
        await ws.send_to(text_data=json.dumps({"id": first["id"], "result": None, "error": "x"}))
        assert (await receive_call(ws))["params"][0]["event_id"] == ids[1]
    finally:
        await ws.disconnect()


async def test_many_connections_each_get_everything():
    ids = await database_sync_to_async(add_events)(20)
    sockets = [await open_socket(f"{EVENTS}?since={ids[0] - 1}") for _ in range(3)]

    async def drain(ws: WebsocketCommunicator) -> list[int]:
        got = []
        for n in range(len(ids)):
            message = await receive_call(ws)
            assert message["id"] == n
            got.append(message["params"][0]["event_id"])
            await ws.send_json_to({"id": n, "result": True, "error": None})
        return got

    try:
        results = await asyncio.gather(*(drain(ws) for ws in sockets))
        assert results == [ids] * 3
    finally:
        for ws in sockets:
            await ws.disconnect()
