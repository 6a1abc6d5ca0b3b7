"""API keys end to end: the HTTP API, the WebSockets and the SSE stream, the
rate limits, the admin and ``manage.py apikey``, and CORS.

With ``SMSAPI_AUTH=required`` every key sees only its own messages and their
events; with ``off`` (the demo default) everything stays open.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import api_keys
from messaging.models import ApiKey, Event, Message, MessagePart
from smsapi.asgi import application
from tests.live import SseClient, WebSocketClosed, WsClient, add_events, daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

SEND = {"dst": "5551234", "text": "hi", "wait": "0"}


@pytest.fixture
def auth_required(settings):
    settings.SMSAPI_AUTH = "required"


def client_for(key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def new_key(name: str = "alice", **options) -> api_keys.IssuedKey:
    return api_keys.create_key(name, **options)


def send(key: str | None, **params) -> dict:
    response = client_for(key).post("/v1/send", {**SEND, **params})
    assert response.status_code == 202, response.content
    return response.json()


def assert_401(response, error: str) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": error}
    assert response["WWW-Authenticate"].startswith("Bearer")


# --- refused ----------------------------------------------------------------------------

ENDPOINTS = [
    ("post", "/v1/send", SEND),
    ("post", "/v1/send/batch", None),
    ("get", "/v1/query?id=1", None),
    ("get", "/v1/messages", None),
    ("get", "/v1/messages/1", None),
]


@pytest.mark.parametrize(("method", "path", "data"), ENDPOINTS)
def test_missing_key_is_401(auth_required, method, path, data):
    response = getattr(client_for(), method)(path, data)
    assert_401(response, api_keys.MISSING_KEY)
    assert not Message.objects.exists()


def test_wrong_key_is_401(auth_required):
    issued = new_key()
    tampered = issued.key[:-2] + ("xy" if not issued.key.endswith("xy") else "zz")
    for key in (tampered, "sk_nosuchkeyatall0000000000000000", "nonsense"):
        assert_401(client_for(key).post("/v1/send", SEND), "invalid API key")
    response = APIClient().get("/v1/messages", HTTP_AUTHORIZATION="Basic dXNlcjpwdw==")
    assert_401(response, "invalid Authorization header: Bearer <key> expected")
    assert not Message.objects.exists()


def test_revoked_key_is_401_saying_revoked(auth_required):
    issued = new_key()
    assert client_for(issued.key).get("/v1/messages").status_code == 200
    api_keys.revoke_key(issued.api_key.prefix)
    assert_401(client_for(issued.key).get("/v1/messages"), "API key revoked")
    assert_401(client_for(issued.key).post("/v1/send", SEND), "API key revoked")
    assert not Message.objects.exists()


def test_the_key_may_come_in_the_query_string(auth_required):
    issued = new_key()
    answer = client_for().post(f"/v1/send?api_key={issued.key}", SEND).json()
    message = Message.objects.get(pk=answer["id"])
    assert message.api_key_id == issued.api_key.pk
    assert_401(client_for().get("/v1/messages?api_key=sk_wrong"), "invalid API key")


# --- each key sees its own ----------------------------------------------------------------


def test_a_key_sees_its_own_messages_and_not_anothers(auth_required):
    alice, bob = new_key("alice"), new_key("bob")
    mine = send(alice.key)
    theirs = send(bob.key)
    assert Message.objects.get(pk=mine["id"]).api_key_id == alice.api_key.pk
    assert Message.objects.get(pk=theirs["id"]).api_key_id == bob.api_key.pk
    MessagePart.objects.filter(message_id=mine["id"]).update(
        smsc_id="smsc-alice", match_key="smsc-alice"
    )
    MessagePart.objects.filter(message_id=theirs["id"]).update(
        smsc_id="smsc-bob", match_key="smsc-bob"
    )
    as_alice = client_for(alice.key)

    # detail
    detail = as_alice.get(f"/v1/messages/{mine['id']}")
    assert detail.status_code == 200 and detail.json()["id"] == mine["id"]
    hidden = as_alice.get(f"/v1/messages/{theirs['id']}")
    assert hidden.status_code == 404
    assert hidden.json() == {"error": f'message "{theirs["id"]}" not found'}

    # query by our id and by the SMSC's id
    assert as_alice.get(f"/v1/query?id={mine['id']}").json()["id"] == mine["id"]
    assert as_alice.get("/v1/query?message_id=smsc-alice").json()["id"] == mine["id"]
    for query in (f"id={theirs['id']}", "message_id=smsc-bob"):
        response = as_alice.get(f"/v1/query?{query}")
        assert response.status_code == 404
        assert response.json()["error"].endswith("not found")

    # the list
    listed = as_alice.get("/v1/messages").json()
    assert [m["id"] for m in listed["results"]] == [mine["id"]]
    assert listed["count"] == 1
    bobs = client_for(bob.key).get("/v1/messages").json()
    assert [m["id"] for m in bobs["results"]] == [theirs["id"]]


def test_batches_belong_to_their_key(auth_required):
    alice, bob = new_key("alice"), new_key("bob")
    response = client_for(alice.key).post(
        "/v1/send/batch", [SEND, {**SEND, "dst": "5550002"}], format="json"
    )
    assert response.status_code == 200 and response.json()["accepted"] == 2
    ids = [item["id"] for item in response.json()["results"]]
    assert set(Message.objects.filter(pk__in=ids).values_list("api_key_id", flat=True)) == {
        alice.api_key.pk
    }
    assert client_for(bob.key).get("/v1/messages").json()["count"] == 0


def test_idempotency_key_is_scoped_per_api_key(auth_required):
    alice, bob = new_key("alice"), new_key("bob")
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-17"}
    first = client_for(alice.key).post("/v1/send", SEND, **headers).json()
    again = client_for(alice.key).post("/v1/send", SEND, **headers).json()
    assert again["id"] == first["id"]
    # The same Idempotency-Key from another key is another message, not a replay nor a 409.
    bobs = client_for(bob.key).post("/v1/send", SEND, **headers)
    assert bobs.status_code == 202 and bobs.json()["id"] != first["id"]
    # ... even with a different body, which for alice would be a conflict.
    other = {**SEND, "text": "something else"}
    assert client_for(alice.key).post("/v1/send", other, **headers).status_code == 409
    stored = dict(Message.objects.values_list("idempotency_key", "api_key_id"))
    assert stored == {
        f"{alice.api_key.pk}:order-17": alice.api_key.pk,
        f"{bob.api_key.pk}:order-17": bob.api_key.pk,
    }

    batch_headers = {"HTTP_IDEMPOTENCY_KEY": "batch-1"}
    a = client_for(alice.key).post("/v1/send/batch", [SEND], format="json", **batch_headers)
    b = client_for(bob.key).post("/v1/send/batch", [SEND], format="json", **batch_headers)
    assert a.json()["results"][0]["id"] != b.json()["results"][0]["id"]
    replay = client_for(alice.key).post("/v1/send/batch", [SEND], format="json", **batch_headers)
    assert replay.json()["results"][0]["id"] == a.json()["results"][0]["id"]


# --- rate limits ---------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(auth_required):
    limited, free = new_key("limited", rate_limit=3), new_key("free")
    as_limited = client_for(limited.key)
    answers = [
        as_limited.post("/v1/send", SEND).status_code,
        as_limited.get("/v1/messages").status_code,
        as_limited.get("/v1/query?id=999").status_code,
    ]
    assert answers == [202, 200, 404]  # every endpoint counts, whatever its answer
    for method, path in (("get", "/v1/messages"), ("post", "/v1/send/batch"), ("get", "/v1/query")):
        response = getattr(as_limited, method)(path)
        assert response.status_code == 429
        assert response.json() == {"error": "rate limit of 3 requests a minute exceeded"}
        assert 1 <= int(response["Retry-After"]) <= 60
    assert Message.objects.count() == 1
    # Another key has its own allowance (none here).
    assert all(client_for(free.key).get("/v1/messages").status_code == 200 for _ in range(5))


# --- authentication off ---------------------------------------------------------------------


def test_auth_off_everything_is_open(settings):
    settings.SMSAPI_AUTH = "off"
    issued = new_key()
    now = timezone.now()
    keyed = Message.objects.create(
        dst="1", text="x", encoding="gsm7", api_key=issued.api_key, created_at=now, updated_at=now
    )
    anonymous = client_for()
    answer = send(None)
    assert Message.objects.get(pk=answer["id"]).api_key_id is None
    assert anonymous.get(f"/v1/messages/{keyed.pk}").status_code == 200
    assert anonymous.get("/v1/messages").json()["count"] == 2
    assert anonymous.get(f"/v1/query?id={keyed.pk}").status_code == 200
    # A key, even a bad one, is not looked at: nothing is scoped.
    assert client_for("sk_whatever").get("/v1/messages").json()["count"] == 2
    answer = client_for(issued.key).post("/v1/send", SEND).json()
    assert Message.objects.get(pk=answer["id"]).api_key_id is None
    status = anonymous.get("/v1/status").json()
    assert sum(status["counts"].values()) == 3


async def test_auth_off_websockets_need_no_key(settings):
    settings.SMSAPI_AUTH = "off"
    ws = WebsocketCommunicator(application, "/v1/ws/jsonrpc")
    assert (await ws.connect())[0]
    await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": 1})
    answer = await ws.receive_json_from(timeout=10)
    assert answer["error"] == '404 Not Found: message "1" not found'
    await ws.disconnect()


# --- /v1/status --------------------------------------------------------------------------


def test_status_is_public_but_counts_only_a_keys_own(auth_required):
    alice, bob = new_key("alice"), new_key("bob")
    send(alice.key)
    send(bob.key)
    send(bob.key)
    anonymous = client_for().get("/v1/status")
    assert anonymous.status_code == 200 and anonymous.json()["counts"] == {}
    assert "link" in anonymous.json()
    assert sum(client_for(alice.key).get("/v1/status").json()["counts"].values()) == 1
    assert sum(client_for(bob.key).get("/v1/status").json()["counts"].values()) == 2
    assert_401(client_for("sk_wrongwrongwrong").get("/v1/status"), "invalid API key")


# --- WebSockets, in process ------------------------------------------------------------------


async def closed_with(path: str, headers=None) -> int:
    """Connect and return the close code the server answers with at once."""
    ws = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await ws.connect()
    assert connected  # accepted, then closed: a browser sees the code
    message = await ws.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    return message["code"]


async def test_websockets_refuse_a_missing_wrong_or_revoked_key(auth_required):
    revoked = await database_sync_to_async(new_key)("old")
    await database_sync_to_async(api_keys.revoke_key)(revoked.api_key.prefix)
    for path in ("/v1/ws/jsonrpc", "/v1/ws/jsonrpc/events"):
        assert await closed_with(path) == 4401
        assert await closed_with(f"{path}?api_key=sk_nosuchkey00000000000") == 4401
        assert await closed_with(f"{path}?api_key={revoked.key}") == 4401
        assert await closed_with(path, [(b"authorization", b"Basic eDp5")]) == 4401


async def test_jsonrpc_acts_for_its_key(auth_required):
    alice = await database_sync_to_async(new_key)("alice", rate_limit=3)
    bob = await database_sync_to_async(new_key)("bob")
    theirs = await database_sync_to_async(send)(bob.key)
    headers = [(b"authorization", f"Bearer {alice.key}".encode())]
    ws = WebsocketCommunicator(application, "/v1/ws/jsonrpc", headers=headers)
    assert (await ws.connect())[0]
    try:
        await ws.send_json_to({"method": "SM.Submit", "params": [SEND], "id": 1})
        submitted = await ws.receive_json_from(timeout=10)
        assert submitted["error"] is None
        owner = await database_sync_to_async(
            lambda: Message.objects.get(pk=submitted["result"]["id"]).api_key_id
        )()
        assert owner == alice.api_key.pk

        await ws.send_json_to({"method": "SM.Query", "params": [{"id": theirs["id"]}], "id": 2})
        hidden = await ws.receive_json_from(timeout=10)
        assert hidden["error"] == f'404 Not Found: message "{theirs["id"]}" not found'

        await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": 3})
        await ws.receive_json_from(timeout=10)
        # The fourth call in the minute is over alice's limit of three, as over HTTP.
        await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": 4})
        limited = await ws.receive_json_from(timeout=10)
        assert limited == {
            "id": 4,
            "result": None,
            "error": "429 Too Many Requests: rate limit of 3 requests a minute exceeded",
        }
    finally:
        await ws.disconnect()


def own_and_foreign_events():
    """Events of alice's and bob's messages and an incoming one; their ids by owner."""
    from tests.live import make_message

    alice = new_key("alice")
    quiet = new_key("quiet", receive_incoming=False)
    bob = new_key("bob")
    before = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    messages = {}
    for name, issued in (("alice", alice), ("quiet", quiet), ("bob", bob)):
        message = make_message()
        Message.objects.filter(pk=message.pk).update(api_key=issued.api_key)
        messages[name] = message
    ids = {
        "alice": add_events(1, "status", messages["alice"], ring=False),
        "bob": add_events(1, "receipt", messages["bob"], ring=False),
        "mo": add_events(1, "mo", ring=False),
        "quiet": add_events(1, "receipt", messages["quiet"], ring=False),
        "alice2": add_events(1, "receipt", messages["alice"], ring=False),
    }
    return {"alice": alice, "quiet": quiet, "bob": bob}, messages, before, ids


async def test_events_socket_carries_only_the_keys_events(auth_required):
    keys, messages, before, ids = await database_sync_to_async(own_and_foreign_events)()
    query = f"since={before}&type=receipt,mo,status&api_key={keys['alice'].key}"
    path = f"/v1/ws/jsonrpc/events?{query}"
    ws = WebsocketCommunicator(application, path)
    assert (await ws.connect())[0]
    try:
        seen = []
        for _ in range(3):
            call = await ws.receive_json_from(timeout=10)
            seen.append(call["params"][0]["event_id"])
            await ws.send_json_to({"id": call["id"], "result": True, "error": None})
        assert seen == ids["alice"] + ids["mo"] + ids["alice2"]
        assert await ws.receive_nothing(timeout=0.5)
    finally:
        await ws.disconnect()


# --- over a real server: SSE and the WebSocket close code ---------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne with keys required; it finds new events by polling."""
    with (
        django_db_blocker.unblock(),
        daphne(
            tmp_path_factory.mktemp("auth"),
            SMSAPI_AUTH="required",
            REDIS_URL="",
            EVENTS_POLL_INTERVAL="0.2",
        ) as s,
    ):
        yield s


def sse_event_ids(server, path: str, count: int) -> list[int]:
    client = SseClient(server.port, path)
    try:
        assert client.response.status == 200
        return [int(event.id) for event in client.events(count)]
    finally:
        client.close()


ALL_TYPES = "receipt,mo,status"  # the default streams carry receipts and incoming only


def test_sse_with_api_key_gets_only_its_own_events(server):
    keys, messages, before, ids = own_and_foreign_events()
    # A marker event of each key at the end proves nothing else came in between.
    marker_alice = add_events(1, "status", messages["alice"], ring=False)
    marker_quiet = add_events(1, "status", messages["quiet"], ring=False)

    alice = sse_event_ids(
        server, f"/v1/sse?since={before}&type={ALL_TYPES}&api_key={keys['alice'].key}", 4
    )
    assert alice == ids["alice"] + ids["mo"] + ids["alice2"] + marker_alice

    # receive_incoming=False: no incoming messages either.
    quiet = sse_event_ids(
        server, f"/v1/sse?since={before}&type={ALL_TYPES}&api_key={keys['quiet'].key}", 2
    )
    assert quiet == ids["quiet"] + marker_quiet

    # The header works as well, and filters still apply within the key's events.
    client = SseClient(
        server.port,
        f"/v1/sse?since={before}&type=receipt",
        headers={"Authorization": f"Bearer {keys['bob'].key}"},
    )
    try:
        assert int(client.next_event().id) == ids["bob"][0]
        live_foreign = add_events(1, "receipt", messages["alice"])
        live_own = add_events(1, "receipt", messages["bob"])
        assert int(client.next_event().id) == live_own[0] != live_foreign[0]
    finally:
        client.close()


def test_sse_without_a_good_key_is_401(server):
    revoked = new_key("old")
    api_keys.revoke_key(revoked.api_key.prefix)
    for query, error in (
        ("", api_keys.MISSING_KEY),
        ("?api_key=sk_nosuchkey0000000000000", "invalid API key"),
        (f"?api_key={revoked.key}", "API key revoked"),
    ):
        client = SseClient(server.port, f"/v1/sse{query}")
        try:
            assert client.response.status == 401
            assert client.response.getheader("WWW-Authenticate").startswith("Bearer")
            assert json.loads(client.response.read()) == {"error": error}
        finally:
            client.close()


def test_websocket_over_daphne_closes_4401_without_key_and_works_with_one(server):
    ws = WsClient(server.port, "/v1/ws/jsonrpc")
    try:
        with pytest.raises(WebSocketClosed) as closed:
            ws.receive_text()
        assert closed.value.code == 4401
    finally:
        ws.close()

    issued = new_key()
    ws = WsClient(server.port, f"/v1/ws/jsonrpc?api_key={issued.key}")
    try:
        ws.send_json({"method": "SM.Query", "params": [{"id": "1"}], "id": 1})
        assert ws.receive_json()["error"] == '404 Not Found: message "1" not found'
    finally:
        ws.close()


# --- manage.py apikey ---------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("apikey", *args, stdout=out)
    return out.getvalue()


def test_apikey_command_create_list_revoke(auth_required):
    output = run(
        "create", "billing", "--rate-limit", "5", "--callback-url", "https://b.example/hook",
        "--no-incoming",
    )  # fmt: skip
    keys = re.findall(r"^(sk_\S+)$", output, re.M)
    assert len(keys) == 1
    key = keys[0]
    stored = ApiKey.objects.get()
    assert stored.key_hash == api_keys.hash_key(key) and key not in stored.key_hash
    assert (stored.name, stored.rate_limit, stored.default_callback_url) == (
        "billing",
        5,
        "https://b.example/hook",
    )
    assert stored.receive_incoming is False
    assert f"webhook secret: {stored.webhook_secret}" in output
    assert client_for(key).get("/v1/messages").status_code == 200  # the printed key works

    listing = run("list")
    assert stored.prefix in listing and "billing" in listing and "active" in listing
    assert key not in listing

    assert f"API key {stored.prefix} (billing) revoked" in run("revoke", stored.prefix)
    assert_401(client_for(key).get("/v1/messages"), "API key revoked")
    assert "revoked" in run("list")
    with pytest.raises(CommandError, match='no API key with prefix "nope"'):
        run("revoke", "nope")
    with pytest.raises(CommandError, match="--callback-url"):
        run("create", "x", "--callback-url", "not a url")


# --- the admin ----------------------------------------------------------------------------


@pytest.fixture
def staff_client(django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_admin_creates_a_key_shows_it_once_and_revokes(auth_required, staff_client):
    response = staff_client.post(
        "/admin/messaging/apikey/add/",
        {"name": "shop", "rate_limit": "10", "default_callback_url": "", "receive_incoming": "on"},
        follow=True,
    )
    page = response.content.decode()
    shown = re.findall(r"shown only this once \(keep it now\): (sk_[A-Za-z0-9_-]+)", page)
    assert len(shown) == 1
    stored = ApiKey.objects.get()
    assert api_keys.verify_key(shown[0]) == stored
    assert (stored.name, stored.rate_limit) == ("shop", 10)
    assert client_for(shown[0]).get("/v1/messages").status_code == 200

    listing = staff_client.get("/admin/messaging/apikey/").content.decode()
    assert stored.prefix in listing and "shop" in listing
    change = staff_client.get(f"/admin/messaging/apikey/{stored.pk}/change/").content.decode()
    assert shown[0] not in listing and shown[0] not in change  # never shown again
    assert stored.webhook_secret in change and stored.key_hash not in change

    response = staff_client.post(
        "/admin/messaging/apikey/",
        {"action": "revoke", "_selected_action": [str(stored.pk)]},
        follow=True,
    )
    assert "1 API key(s) revoked." in response.content.decode()
    assert_401(client_for(shown[0]).get("/v1/messages"), "API key revoked")


# --- CORS ----------------------------------------------------------------------------------


def preflight(origin: str):
    return APIClient().options(
        "/v1/send",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, idempotency-key",
    )


def test_cors_preflight_answers_the_configured_origin(auth_required, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    response = preflight("https://app.example")
    assert response.status_code == 200  # answered before authentication: no key needed
    assert response["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "idempotency-key"} <= allowed
    assert "Access-Control-Allow-Credentials" not in response

    assert "Access-Control-Allow-Origin" not in preflight("https://evil.example")

    settings.CORS_ALLOW_ALL_ORIGINS = True
    assert preflight("https://anyone.example")["Access-Control-Allow-Origin"] == "*"
