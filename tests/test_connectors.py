"""Connectors and routes managed live (issue 24): the API, the admin, the command, the
routing state the API routes with, and failover in the store.

What goes over the wire (binds, live changes, failover between SMSCs) is in
tests/test_connector_fleet.py.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import api_keys, store
from messaging.connectors import (
    ConnectorAvailability,
    RoutingState,
    Unroutable,
    read_routing_state,
    routing_cache,
)
from messaging.models import ApiKey, Connector, LinkStatus, Message, MessagePart, Route
from messaging.routing import MessageFacts, RoutingTable
from messaging.routing import Route as Rule
from messaging.states import State
from messaging.store.rerouting import reroute_queued
from tests.factories import new_message

pytestmark = pytest.mark.django_db(transaction=True)


def connector(name: str, **fields) -> Connector:
    values = {"host": "127.0.0.1", "port": 2775, "system_id": "smsapi", "password": "secret"}
    return Connector.objects.create(name=name, **(values | fields))


def route(name: str, connectors: str, position: int = 0, **fields) -> Route:
    return Route.objects.create(name=name, connectors=connectors, position=position, **fields)


# --- the routing state -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_connector_not_bound_for_longer_than_its_failover_time_is_not_usable():
    clock = Clock()
    availability = ConnectorAvailability(clock)
    enabled = {"a": 30.0, "b": 5.0}
    assert availability.usable(enabled, set()) == {"a", "b"}  # new: time to bind
    clock.now += 10
    assert availability.usable(enabled, {"a"}) == {"a"}  # b down 10 s > 5 s
    clock.now += 25
    assert availability.usable(enabled, {"b"}) == {"a", "b"}  # a down 25 s < 30 s
    clock.now += 10
    assert availability.usable(enabled, {"b"}) == {"b"}  # a down 35 s


def test_the_state_chooses_a_usable_connector_else_an_enabled_one_else_refuses():
    table = RoutingTable([Rule("uk", ("a", "b"), dst_prefixes=("44",))])
    state = RoutingState(table, {"a": 30.0, "b": 30.0}, frozenset({"b"}))
    assert state.choose(MessageFacts("447700900001"), 1).connector == "b"  # a is down
    waiting = RoutingState(table, {"a": 30.0, "b": 30.0}, frozenset())
    assert waiting.choose(MessageFacts("447700900001"), 1).connector == "a"  # queued for a
    with pytest.raises(Unroutable, match="no route takes"):
        state.choose(MessageFacts("33600000001"), 1)
    gone = RoutingState(table, {}, frozenset())
    with pytest.raises(Unroutable, match='route "uk" has no enabled connector'):
        gone.choose(MessageFacts("447700900001"), 1)


def test_with_no_route_stored_everything_takes_the_default_connector(settings):
    state = read_routing_state(ConnectorAvailability())
    assert state.choose(MessageFacts("33600000001"), 1).connector == ""
    settings.SMPP_DEFAULT_CONNECTOR = False
    with pytest.raises(Unroutable):
        read_routing_state(ConnectorAvailability()).choose(MessageFacts("336"), 1)


def test_a_bad_stored_route_is_left_out_not_raised(caplog):
    connector("a")
    route("broken", "a", dst_pattern="(")  # written past the checks
    route("rest", "a", position=1)
    state = read_routing_state(ConnectorAvailability())
    assert [r.name for r in state.table.routes] == ["rest"]
    assert "route 'broken' is not usable as stored" in caplog.text


# --- /v1/send routes -----------------------------------------------------------------------


def send(client: APIClient, **data) -> tuple[int, dict]:
    response = client.post("/v1/send", {"src": "bart", "text": "hi", **data}, format="json")
    return response.status_code, response.json()


def test_send_takes_the_route_of_its_destination_and_says_which_connector():
    connector("uk")
    connector("fr")
    route("uk", "uk", dst_prefixes="44")
    route("fr", "fr", dst_pattern=r"\+?33[67]\d{8}", position=1)
    route("rest", "default", position=2)
    client = APIClient()
    for dst, expected in (("+447700900001", "uk"), ("33612345678", "fr"), ("4915", "default")):
        status, body = send(client, dst=dst)
        assert status == 202, body
        assert body["connector"] == expected
        assert Message.objects.get(pk=body["id"]).connector == (
            "" if expected == "default" else expected
        )
        detail = client.get(f"/v1/messages/{body['id']}").json()
        assert detail["connector"] == expected


def test_a_connector_that_reads_data_coding_0_as_latin1_gets_its_text_encoded_for_it():
    connector("lat", default_alphabet="latin1")
    route("fr", "lat", dst_prefixes="33")
    route("rest", "default", position=1)
    client = APIClient()
    status, body = send(client, dst="33612345678", text="café")
    assert status == 202, body
    sent = Message.objects.get(pk=body["id"])
    assert (sent.connector, sent.encoding, sent.data_coding) == ("lat", "latin1", 3)
    status, body = send(client, dst="4915", text="café")  # the gateway's alphabet: GSM
    assert (Message.objects.get(pk=body["id"]).encoding, body["connector"]) == ("gsm7", "default")
    # The cost preview routes and counts alike: 160 "é" are one GSM part, two Latin-1 ones.
    preview = client.post(
        "/v1/send", {"dst": "33612345678", "text": "é" * 160, "dry_run": "1"}, format="json"
    ).json()
    assert (preview["connector"], preview["encoding"], preview["parts"]) == ("lat", "latin1", 2)
    preview = client.post(
        "/v1/send", {"dst": "4915", "text": "é" * 160, "dry_run": "1"}, format="json"
    ).json()
    assert (preview["connector"], preview["encoding"], preview["parts"]) == ("default", "gsm7", 1)
    # GSM 03.38 asked for where data_coding 0 is Latin-1: refused, naming why.
    status, body = send(client, dst="33612345679", text="café", enc="gsm7")
    assert status == 400
    assert body["error"].startswith('invalid parameter "enc"')
    assert 'connector "lat" reads data_coding 0 as latin1' in body["error"]
    assert not Message.objects.filter(dst="33612345679").exists()


def test_a_message_no_route_takes_is_refused_and_nothing_is_stored():
    connector("uk")
    route("uk", "uk", dst_prefixes="44")
    status, body = send(APIClient(), dst="33612345678")
    assert status == 400
    assert "no route takes this message" in body["error"]
    assert "nothing was stored" in body["error"]
    assert not Message.objects.exists()
    status, body = send(APIClient(), dst="33612345678", dry_run="1")  # the preview says so too
    assert status == 400 and "no route takes this message" in body["error"]


def test_routes_by_source_and_by_api_key(settings):
    settings.SMSAPI_AUTH = "required"
    connector("marketing")
    connector("alerts")
    alice = api_keys.create_key("alice")
    bob = api_keys.create_key("bob")
    route("promo", "marketing", sources="PROMO")
    route("alice", "alerts", position=1).api_keys.set([alice.api_key])
    route("rest", "default", position=2)
    routing_cache.forget()
    for key, src, expected in (
        (alice.key, "PROMO", "marketing"),
        (alice.key, "bart", "alerts"),
        (bob.key, "bart", "default"),
    ):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        status, body = send(client, dst="447700900001", src=src)
        assert (status, body["connector"]) == (202, expected)


def test_a_batch_refuses_the_unroutable_item_alone():
    connector("uk")
    route("uk", "uk", dst_prefixes="44")
    response = APIClient().post(
        "/v1/send/batch",
        [{"dst": "447700900001", "text": "a"}, {"dst": "33612345678", "text": "b"}],
        format="json",
    )
    results = response.json()["results"]
    assert [r["http_status"] for r in results] == [202, 400]
    assert results[0]["connector"] == "uk"
    assert "no route takes" in results[1]["error"]
    assert Message.objects.count() == 1


def test_a_status_event_names_the_connector():
    connector("uk")
    route("uk", "uk")
    status, body = send(APIClient(), dst="447700900001")
    message = Message.objects.get(pk=body["id"])
    from messaging.event_payloads import message_status_payload

    assert message_status_payload(message, "delivered")["connector"] == "uk"


# --- /v1/connectors and /v1/routes --------------------------------------------------------


def test_a_connector_is_made_changed_and_its_password_never_shown():
    client = APIClient()
    created = client.post(
        "/v1/connectors",
        {"name": "uk-a", "host": "smsc.example", "system_id": "acme", "password": "s3cret"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert "password" not in created.json()
    assert created.json()["password_set"] is True
    assert created.json()["smsc_id_style"] == "auto"
    changed = client.patch(
        "/v1/connectors/uk-a", {"window": 50, "binds": 2, "smsc_id_style": "same"}, format="json"
    )
    assert changed.status_code == 200
    stored = Connector.objects.get(name="uk-a")
    assert (stored.window, stored.binds, stored.password) == (50, 2, "s3cret")
    assert stored.smsc_id_style == "same"
    by_variable = client.patch(
        "/v1/connectors/uk-a", {"password_variable": "UK_A_PASSWORD"}, format="json"
    )
    assert by_variable.json()["password_variable"] == "UK_A_PASSWORD"  # a name, not a secret
    assert "s3cret" not in json.dumps(client.get("/v1/connectors").json())


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "default"}, "name"),
        ({"name": "Bad Name"}, "name"),
        ({"port": 70000}, "port"),
        ({"binds": 0}, "binds"),
        ({"window": 0}, "window"),
        ({"bind_mode": "sideways"}, "bind_mode"),
        ({"source_ton": 9}, "source_ton"),
        ({"password": "longer-than-8"}, "password"),
        ({"system_id": "systèm"}, "system_id"),  # SMPP carries printable ASCII only
        ({"system_type": "a\x00b"}, "system_type"),
        ({"host": "smsc example"}, "host"),
        ({"smsc_id_style": "hex"}, "smsc_id_style"),
        ({"default_alphabet": "ascii"}, "default_alphabet"),
        ({"password_variable": "UK-PW"}, "password_variable"),
        ({"password_variable": "$(reboot)"}, "password_variable"),
    ],
)
def test_a_bad_connector_is_a_400_naming_the_field_and_nothing_is_stored(fields, field):
    data = {"name": "uk", "host": "smsc.example", "system_id": "acme"} | fields
    response = APIClient().post("/v1/connectors", data, format="json")
    assert response.status_code == 400
    assert field in json.dumps(response.json())
    assert not Connector.objects.exists()


def test_a_route_must_name_known_connectors_and_usable_rules():
    client = APIClient()
    bad = client.post("/v1/routes", {"name": "r", "connectors": ["nope"]}, format="json")
    assert bad.status_code == 400
    assert "no such connector: nope" in json.dumps(bad.json())
    connector("a")
    connector("b")
    for data in (
        {"connectors": ["a", "b"], "weights": [1]},
        {"connectors": ["a"], "dst_prefixes": ["44x"]},
        {"connectors": ["a"], "dst_pattern": "("},
    ):
        response = client.post("/v1/routes", {"name": "r"} | data, format="json")
        assert response.status_code == 400, data
    assert not Route.objects.exists()
    good = client.post(
        "/v1/routes",
        {"name": "split", "connectors": ["a", "b"], "weights": [3, 1], "dst_prefixes": ["44"]},
        format="json",
    )
    assert good.status_code == 201, good.json()
    assert good.json()["weights"] == [3, 1]
    assert client.get("/v1/routes").json()[0]["connectors"] == ["a", "b"]


def test_a_connector_a_route_names_cannot_be_removed():
    connector("a")
    route("r", "a")
    client = APIClient()
    response = client.delete("/v1/connectors/a")
    assert response.status_code == 409
    assert "route(s) r" in response.json()["error"]
    assert client.delete("/v1/routes/r").status_code == 204
    assert client.delete("/v1/connectors/a").status_code == 204
    assert not Connector.objects.exists()


def test_the_route_check_says_which_connector_a_message_would_take():
    connector("uk")
    route("uk", "uk,default", dst_prefixes="44")
    body = APIClient().get("/v1/routes/check", {"dst": "447700900001"}).json()
    assert (body["route"], body["connector"]) == ("uk", "uk")
    assert body["failover"] == ["default"]
    refused = APIClient().get("/v1/routes/check", {"dst": "33600000000"}).json()
    assert refused["connector"] is None and "no route" in refused["refused"]


def test_managing_connectors_needs_a_key_allowed_to_and_staff_may_read(settings):
    settings.SMSAPI_AUTH = "required"
    plain = api_keys.create_key("plain")
    manager = api_keys.create_key("manager")

    ApiKey.objects.filter(pk=manager.api_key.pk).update(manage_connectors=True)
    data = {"name": "uk", "host": "smsc.example", "system_id": "acme"}
    client = APIClient()
    assert client.post("/v1/connectors", data, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain.key}")
    assert client.post("/v1/connectors", data, format="json").status_code == 403
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {manager.key}")
    assert client.post("/v1/connectors", data, format="json").status_code == 201
    staff = APIClient()
    staff.force_login(User.objects.create_user("op", password="pw", is_staff=True))
    assert staff.get("/v1/connectors").status_code == 200  # a staff session reads...
    assert staff.delete("/v1/connectors/uk").status_code == 401  # ...and never writes
    assert Connector.objects.filter(name="uk").exists()


# --- the command ---------------------------------------------------------------------------


def run(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command(*args, stdout=out)
    finally:
        sys.stdin = old
    return out.getvalue()


def test_the_command_adds_changes_and_removes_connectors_and_routes(monkeypatch):
    monkeypatch.setenv("UK_PASSWORD", "pw-uk")
    run(
        "connectors",
        "add",
        "uk",
        "--host",
        "smsc.example",
        "--system-id",
        "acme",
        "--password-env",
        "UK_PASSWORD",
        "--binds",
        "2",
        "--bind-mode",
        "tx_rx",
    )
    stored = Connector.objects.get(name="uk")
    assert (stored.password, stored.binds, stored.bind_mode) == ("pw-uk", 2, "tx_rx")
    shown = run("connectors", "show", "uk")
    assert "pw-uk" not in shown and json.loads(shown)["password_set"] is True
    run("connectors", "set", "uk", "--password-stdin", "--window", "20", stdin="pw-new\n")
    stored.refresh_from_db()
    assert (stored.password, stored.window) == ("pw-new", 20)
    with pytest.raises(CommandError, match="port"):
        run("connectors", "set", "uk", "--port", "0")
    run("connectors", "set", "uk", "--password-variable", "UK_SMSC_PASSWORD")
    assert json.loads(run("connectors", "show", "uk"))["password_variable"] == "UK_SMSC_PASSWORD"
    run("connectors", "set", "uk", "--smsc-id-style", "hex_receipt")
    assert json.loads(run("connectors", "show", "uk"))["smsc_id_style"] == "hex_receipt"
    with pytest.raises(CommandError, match="smsc_id_style"):
        run("connectors", "set", "uk", "--smsc-id-style", "hex")
    run("routes", "add", "uk", "--connectors", "uk,default", "--dst-prefixes", "44")
    check = json.loads(run("routes", "check", "--dst", "447700900001"))
    assert (check["route"], check["connector"], check["failover"]) == ("uk", "uk", ["default"])
    with pytest.raises(CommandError, match="route\\(s\\) uk"):
        run("connectors", "remove", "uk")
    with pytest.raises(CommandError, match="no such connector: nope"):
        run("routes", "set", "uk", "--connectors", "nope")
    run("connectors", "disable", "uk")
    assert not Connector.objects.get(name="uk").enabled
    run("routes", "remove", "uk")
    run("connectors", "remove", "uk")
    assert not Connector.objects.exists()


# --- the admin -----------------------------------------------------------------------------


@pytest.fixture
def admin_client_logged_in(client):
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    return client


def test_the_admin_never_shows_a_password_and_keeps_it_when_left_empty(admin_client_logged_in):
    c = connector("uk", password="topsecr")
    page = admin_client_logged_in.get(f"/admin/messaging/connector/{c.pk}/change/")
    assert page.status_code == 200
    assert "topsecr" not in page.content.decode()
    response = admin_client_logged_in.post(
        f"/admin/messaging/connector/{c.pk}/change/",
        {
            "enabled": "on",
            "host": "10.0.0.1",
            "port": 2775,
            "tls_ca": "",
            "system_id": "acme",
            "password": "",
            "system_type": "",
            "bind_mode": "transceiver",
            "binds": 1,
            "window": 10,
            "max_rate": 0,
            "enquire_link_interval": 10,
            "response_timeout": 10,
            "link_timeout": 30,
            "failover_after": 30,
            "smsc_id_style": "hex_response",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    c.refresh_from_db()
    assert (c.host, c.password, c.window) == ("10.0.0.1", "topsecr", 10)
    assert c.smsc_id_style == "hex_response"


def test_the_admin_check_says_which_connector_would_take_it(admin_client_logged_in):
    connector("uk")
    route("uk", "uk", dst_prefixes="44")
    listing = admin_client_logged_in.get("/admin/messaging/route/")
    assert "Which connector would this take?" in listing.content.decode()
    page = admin_client_logged_in.get("/admin/messaging/route/check/", {"dst": "447700900001"})
    assert '<strong id="route-connector">uk</strong>' in page.content.decode()
    refused = admin_client_logged_in.get("/admin/messaging/route/check/", {"dst": "3360"})
    assert "Refused at the API: no route takes this message" in refused.content.decode()


def test_the_admin_refuses_a_route_to_an_unknown_connector(admin_client_logged_in):
    response = admin_client_logged_in.post(
        "/admin/messaging/route/add/",
        {"name": "r", "position": 0, "enabled": "on", "connectors": "nope"},
    )
    assert response.status_code == 200
    assert "no such connector: nope" in response.content.decode()
    assert not Route.objects.exists()


# --- failover in the store -----------------------------------------------------------------


def _queued(dst: str, connector_name: str, count: int = 1, text: str = "hi") -> list[int]:
    return [
        m.pk
        for m in store.create_messages(
            [new_message(text, dst=dst, connector=connector_name) for _ in range(count)]
        )
    ]


def _after_a_is_down_5_seconds(bound: str):
    """The routing state once connector "a" (failover_after=1) has not been bound for
    5 s while ``bound`` is, and the failover chooser the fleet hands the store."""
    now = timezone.now()
    LinkStatus.objects.create(
        worker_id=f"w-{bound}", state="bound", connector=bound, changed_at=now, heartbeat_at=now
    )
    clock = Clock()
    availability = ConnectorAvailability(clock)
    read_routing_state(availability)
    clock.now += 5
    state = read_routing_state(availability)

    def choose(facts, key, current):
        choice = state.reroute(facts, key, current)
        return None if choice is None else choice.connector

    return state, choose


@pytest.mark.store
def test_queued_messages_move_only_when_none_of_their_parts_has_left():
    ids = _queued("447700900001", "a", 3)
    long_id = _queued("447700900001", "a", 1, text="long message " * 30)[0]
    claimed = store.claim_parts("w1", 1, 60, connector="a")  # one part in a worker's hands
    busy = claimed[0].message_id
    MessagePart.objects.filter(message_id=long_id, index=2).update(
        state=State.SUBMITTED, smsc_id="x"
    )
    moved = reroute_queued({"a"}, lambda facts, key, current: "b").moved
    free = set(ids) - {busy}
    assert moved == {("a", "b"): len(free)}
    assert set(Message.objects.filter(connector="b").values_list("pk", flat=True)) == free
    assert Message.objects.get(pk=busy).connector == "a"
    assert Message.objects.get(pk=long_id).connector == "a"


@pytest.mark.store
def test_failover_follows_the_route_and_leaves_what_it_cannot_place():
    connector("a", failover_after=1)
    connector("b")
    connector("c")
    route("uk", "a,b", dst_prefixes="44")
    route("fr", "a", dst_prefixes="33", position=1)
    uk = _queued("447700900001", "a", 2)
    fr = _queued("33612345678", "a", 2)
    state, choose = _after_a_is_down_5_seconds(bound="b")
    assert "a" not in state.usable and "b" in state.usable
    assert reroute_queued({"a"}, choose).moved == {("a", "b"): 2}
    assert set(Message.objects.filter(pk__in=uk).values_list("connector", flat=True)) == {"b"}
    assert set(Message.objects.filter(pk__in=fr).values_list("connector", flat=True)) == {"a"}


@pytest.mark.store
def test_failover_moves_a_message_only_where_its_encoding_can_be_sent():
    connector("a", failover_after=1)
    connector("lat", default_alphabet="latin1")
    route("all", "a,lat")
    gsm = _queued("447700900001", "a", 1, text="hi")
    ucs2 = _queued("447700900002", "a", 1, text="hi ☃")
    state, choose = _after_a_is_down_5_seconds(bound="lat")
    assert state.alphabet_of("lat") == "latin1" and state.alphabet_of("a") == "gsm7"
    # GSM 03.38 parts (data_coding 0) would read as Latin-1 there: they wait for "a".
    assert reroute_queued({"a"}, choose).moved == {("a", "lat"): 1}
    assert Message.objects.get(pk=gsm[0]).connector == "a"
    assert Message.objects.get(pk=ucs2[0]).connector == "lat"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/connectors", {"name": "uk", "host": "h", "system_id": "s", "port": "abc"}),
        ("/v1/connectors", {"name": "uk", "host": "h", "system_id": "s", "binds": 10**9}),
        ("/v1/connectors", {"name": "uk", "host": "h", "system_id": "s", "enabled": "maybe"}),
        ("/v1/connectors", ["not", "an", "object"]),
        ("/v1/routes", {"name": "r", "connectors": "default"}),  # a list is wanted
        ("/v1/routes", {"name": "r", "connectors": [1, {"x": 2}]}),
        ("/v1/routes", {"name": "r", "connectors": ["default"], "weights": [-1]}),
        ("/v1/routes", {"name": "r", "connectors": ["a,b"]}),  # no commas inside a name
        ("/v1/routes", {"name": "r", "connectors": ["default"], "api_keys": ["nosuchkey"]}),
        ("/v1/routes", {"name": "r", "connectors": ["default"] * 2}),
    ],
)
def test_hostile_bodies_are_a_400_and_change_nothing(path, body):
    response = APIClient().post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert "error" in response.json()
    assert not Connector.objects.exists() and not Route.objects.exists()


def test_the_route_check_needs_a_destination():
    response = APIClient().get("/v1/routes/check")
    assert response.status_code == 400
    assert "dst" in response.json()["error"]


def test_a_key_allowed_to_manage_connectors_is_made_by_the_command():
    output = run("apikey", "create", "ops", "--manage-connectors")
    key = next(line for line in output.splitlines() if line.startswith("sk_"))
    plain = run("apikey", "create", "app")
    assert ApiKey.objects.get(name="ops").manage_connectors
    assert not ApiKey.objects.get(name="app").manage_connectors
    assert key not in plain
