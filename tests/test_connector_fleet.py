"""Several SMSCs over real TCP (issue 24): the worker fleet binds every enabled
connector, follows changes live, and fails queued messages over; the API routes.

Each SMSC is a simulator of its own on its own port with its own credentials.
Their ids start at 1 alike, so the same SMSC id comes back from two of them
and each receipt must be matched within its own connector.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from dataclasses import replace

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import Count

from messaging import api_keys, store
from messaging.api import sending
from messaging.connectors import routing_cache
from messaging.models import BindClaim, Connector, LinkStatus, Message, Receipt, Route
from messaging.states import State
from smpp.session import SessionConfig
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from smpp_gateway.worker import WorkerConfig
from smpp_gateway.worker.fleet import BindSlot, WorkerFleet, wanted_binds
from tests.conftest import wait_until
from tests.factories import new_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]


def smsc(system_id: str, password: str, **changes) -> SimulatorThread:
    config = SimulatorConfig(
        port=0, system_id=system_id, password=password, receipt_delay=0, first_message_id=1
    )
    return SimulatorThread(config, **changes).start()


def default_config(simulator: SimulatorThread) -> WorkerConfig:
    session = SessionConfig(
        host="127.0.0.1", port=simulator.port, system_id="smsapi", password="secret"
    )
    return WorkerConfig.from_settings(session=session, reconnect_delays=(0.2, 0.5))


@sync_to_async
def add_connector(name: str, simulator: SimulatorThread, password: str, **fields) -> None:
    Connector.objects.update_or_create(
        name=name,
        defaults={
            "host": "127.0.0.1",
            "port": simulator.port,
            "system_id": name,
            "password": password,
            **fields,
        },
    )
    routing_cache.forget()


@sync_to_async
def set_route(name: str, connectors: str, position: int = 0, **fields) -> None:
    Route.objects.update_or_create(
        name=name, defaults={"connectors": connectors, "position": position, **fields}
    )
    routing_cache.forget()


async def send(dst: str, text: str = "hi", src: str = "bart", api_key=None) -> dict:
    data = {"dst": dst, "src": src, "text": text, "wait": "0"}
    answer = await sending.send(data, api_key=api_key)
    assert answer.status == 202, answer.body
    return answer.body


async def until(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await sync_to_async(predicate)():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.1)


def states() -> dict[str, int]:
    return dict(Message.objects.values_list("state").annotate(n=Count("id")))


def all_delivered(count: int):
    return lambda: states().get(State.DELIVERED, 0) == count


async def run_fleet(fleet: WorkerFleet, scenario) -> None:
    task = asyncio.ensure_future(fleet.run())
    try:
        await scenario()
    finally:
        fleet.stop()
        await asyncio.wait_for(task, 30)


def submits_by_dst(*simulators: SimulatorThread) -> collections.Counter:
    return collections.Counter(r.destination_addr for s in simulators for r in s.submits())


# --- the plan of binds -------------------------------------------------------------------


def test_each_bind_gets_its_own_worker_and_a_tx_rx_connector_two(settings):
    from messaging.connectors import ConnectorSpec

    settings.SMPP_BINDS = 2
    base = WorkerConfig.from_settings()
    spec = ConnectorSpec(
        name="uk",
        host="h",
        port=1,
        system_id="s",
        password="p",
        bind_mode="tx_rx",
        binds=2,
        window=7,
        max_rate=50,
        source_ton=5,
        smsc_id_style="hex_receipt",
        default_alphabet="latin1",
    )
    binds = wanted_binds({"": None, "uk": spec}, base)
    assert sorted(binds) == sorted(
        [BindSlot("", 0, "transceiver"), BindSlot("", 1, "transceiver")]
        + [BindSlot("uk", i, kind) for i in (0, 1) for kind in ("transmitter", "receiver")]
    )
    tx = binds[BindSlot("uk", 1, "transmitter")]
    assert (tx.connector, tx.bind_index, tx.session.bind_kind) == ("uk", 1, "transmitter")
    assert (tx.session.host, tx.session.window, tx.max_rate) == ("h", 7, 50)
    assert tx.submit_overrides == (("source_addr_ton", 5),)
    default = binds[BindSlot("", 0, "transceiver")]
    assert (tx.smsc_id_style, default.smsc_id_style) == ("hex_receipt", "auto")
    assert (tx.default_alphabet, default.default_alphabet) == ("latin1", "gsm7")  # incoming


def test_a_password_variable_is_read_from_the_environment_and_checked(monkeypatch):
    from messaging.connectors import ConnectorSpec, bind_password

    spec = ConnectorSpec("uk", "h", 1, "s", "stored", password_variable="UK_PW")
    monkeypatch.setenv("UK_PW", "from-env")
    assert bind_password(spec) == ("from-env", "")
    assert WorkerConfig.for_connector(spec).session.password == "from-env"
    monkeypatch.setenv("UK_PW", "nine-long")
    assert bind_password(spec) == (
        "",
        "password variable UK_PW is not an SMPP password (8 printable ASCII at most)",
    )
    monkeypatch.delenv("UK_PW")
    unusable = WorkerConfig.for_connector(spec).unusable
    assert unusable == "password variable UK_PW is not set in the worker's environment"
    assert bind_password(replace(spec, password_variable="")) == ("stored", "")


def test_an_unknown_smsc_id_style_setting_stops_the_worker_with_its_name(settings):
    settings.SMPP_SMSC_ID_STYLE = "hex"
    with pytest.raises(ValueError, match="SMSC id style 'hex' is not one of auto, same"):
        WorkerConfig.from_settings()


def test_the_default_connector_is_each_workers_own_until_smpp_binds_is_set(settings):
    from smpp_gateway.worker.fleet import shared

    settings.SMPP_BINDS = 0
    assert not shared(BindSlot("", 0, "transceiver"))  # every worker binds it, as before
    assert shared(BindSlot("uk", 0, "transceiver"))
    settings.SMPP_BINDS = 3
    assert shared(BindSlot("", 2, "transceiver"))


# --- routing over the wire -------------------------------------------------------------


def test_messages_go_through_the_smsc_their_route_names_and_ids_collide_safely():
    a, b = smsc("smsapi", "secret"), smsc("b", "pw-b")
    alice = api_keys.create_key("alice").api_key
    try:
        fleet = WorkerFleet(default_config(a), reload_interval=0.2)

        async def scenario() -> None:
            await add_connector("b", b, "pw-b")
            await set_route("uk", "b", dst_prefixes="44")
            await set_route("promo", "b", sources="PROMO", position=1)
            await set_route("alice", "b", position=2)
            await sync_to_async(lambda: Route.objects.get(name="alice").api_keys.set([alice]))()
            await set_route("rest", "default", position=3)
            await until(lambda: LinkStatus.objects.filter(connector="b", state="bound").exists())
            for i in range(40):
                assert (await send(f"4477009{i:05d}"))["connector"] == "b"  # by prefix
                assert (await send(f"3361234{i:04d}"))["connector"] == "default"
                assert (await send(f"3362000{i:04d}", src="PROMO"))["connector"] == "b"
                assert (await send(f"3363000{i:04d}", api_key=alice))["connector"] == "b"
            await until(all_delivered(160), what="160 delivered")

        asyncio.run(run_fleet(fleet, scenario))
        to_a, to_b = submits_by_dst(a), submits_by_dst(b)
        assert set(to_b) == {
            dst
            for i in range(40)
            for dst in (f"4477009{i:05d}", f"3362000{i:04d}", f"3363000{i:04d}")
        }
        assert set(to_a) == {f"3361234{i:04d}" for i in range(40)}
        assert set(to_a.values()) == set(to_b.values()) == {1}
        ids_a = {r.id_str for r in a.submits()}
        ids_b = {r.id_str for r in b.submits()}
        assert len(ids_a & ids_b) >= 40  # the same SMSC ids from both
        # ...and every receipt went to its own connector's message.
        for message in Message.objects.prefetch_related("receipts"):
            (receipt,) = message.receipts.all()
            assert receipt.connector == message.connector
            assert receipt.destination_addr or receipt.source_addr == message.dst
    finally:
        a.stop()
        b.stop()


def test_a_weighted_split_holds_its_weights_over_10000_messages():
    a, b = smsc("a", "pw-a"), smsc("b", "pw-b")
    try:
        fleet = WorkerFleet(None, reload_interval=0.2)

        async def scenario() -> None:
            await add_connector("a", a, "pw-a")
            await add_connector("b", b, "pw-b")
            await set_route("split", "a,b", weights="3,1")
            await until(
                lambda: LinkStatus.objects.filter(state="bound").count() == 2, what="two binds"
            )
            await asyncio.gather(*(send(f"4477{i:08d}") for i in range(10_000)))
            await until(all_delivered(10_000), timeout=120, what="10,000 delivered")

        asyncio.run(run_fleet(fleet, scenario))
        share = len(a.submits()) / 10_000
        assert len(a.submits()) + len(b.submits()) == 10_000
        assert 0.73 <= share <= 0.77, share
    finally:
        a.stop()
        b.stop()


# --- live changes -------------------------------------------------------------------------


def test_connectors_added_changed_and_removed_while_traffic_flows_lose_nothing():
    a, b, c = smsc("smsapi", "secret"), smsc("b", "pw-b"), smsc("c", "pw-c")
    sent: list[str] = []
    try:
        fleet = WorkerFleet(default_config(a), reload_interval=0.2)

        async def traffic(stop: asyncio.Event) -> None:
            i = 0
            while not stop.is_set():
                body = await send(f"4477{i:08d}")
                sent.append(body["id"])
                i += 1
                await asyncio.sleep(0.005)

        async def scenario() -> None:
            await set_route("uk", "default", dst_prefixes="44")
            stop = asyncio.Event()
            flowing = asyncio.ensure_future(traffic(stop))
            await until(lambda: len(a.submits()) > 20, what="traffic through default")
            # Added: a new SMSC, and the route moved to it; no restart.
            await add_connector("b", b, "pw-b")
            await set_route("uk", "b,default", dst_prefixes="44")
            await until(lambda: len(b.submits()) > 20, what="traffic through b")
            # Changed: b's window; its session drains and binds again.
            unbinds = b.stats()["unbinds_received"]
            await add_connector("b", b, "pw-b", window=5)
            await until(
                lambda: b.stats()["unbinds_received"] > unbinds and b.stats()["sessions_bound"],
                what="b unbound and bound again",
            )
            # Removed: the route goes to c, then b goes; b's queue fails over.
            await add_connector("c", c, "pw-c")
            await set_route("uk", "c", dst_prefixes="44")
            await sync_to_async(Connector.objects.filter(name="b").delete)()
            await until(lambda: len(c.submits()) > 20, what="traffic through c")
            # Counted, not timed: a slow machine still gets a run of this length.
            await until(lambda: len(sent) > 100, what="over 100 messages sent")
            stop.set()
            await flowing
            await until(all_delivered(len(sent)), timeout=60, what="all delivered")

        asyncio.run(run_fleet(fleet, scenario))
        counts = submits_by_dst(a, b, c)
        assert len(counts) == len(sent) > 100
        assert set(counts.values()) == {1}  # each sent once
        assert not Message.objects.filter(possibly_duplicated=True).exists()
        assert {"", "b", "c"} <= set(Message.objects.values_list("connector", flat=True))
    finally:
        for simulator in (a, b, c):
            simulator.stop()


def test_a_transmitter_receiver_pair_sends_on_one_session_and_takes_receipts_on_the_other(
    settings,
):
    settings.SMPP_DEFAULT_CONNECTOR = False
    # Ids as a real SMSC gives them (large): on a pair, receipts overtake responses, and
    # ids of 1-20 would read as each other in the other base (smpp/smsc_ids.py).
    pair = smsc("pair", "pw-p", first_message_id=10**6)
    try:
        fleet = WorkerFleet(None, reload_interval=0.2)

        async def scenario() -> None:
            await add_connector("pair", pair, "pw-p", bind_mode="tx_rx")
            await set_route("all", "pair")
            await until(
                lambda: LinkStatus.objects.filter(connector="pair", state="bound").count() == 2,
                what="transmitter and receiver bound",
            )
            for i in range(20):
                await send(f"4477{i:08d}")
            await until(all_delivered(20), what="20 delivered, receipts on the receiver")

        asyncio.run(run_fleet(fleet, scenario))
        sessions = {r.session for r in pair.submits()}
        assert len(pair.submits()) == 20 and len(sessions) == 1  # submits on the transmitter
        assert pair.stats()["receipts_acknowledged"] == 20  # answered by the receiver
    finally:
        pair.stop()


@pytest.mark.parametrize(
    ("id_style", "simulator_ids"),
    [("same", {}), ("hex_response", {"hex_ids": True})],
)
def test_with_its_id_style_known_small_ids_on_a_pair_match_their_own_messages(
    settings, id_style, simulator_ids
):
    """Ids from 1, receipts overtaking responses: read in both bases, ``20`` would also
    be hex ``14`` (another part in flight). The connector's style says which is meant."""
    settings.SMPP_DEFAULT_CONNECTOR = False
    pair = smsc("pair", "pw-p", receipt_before_response=True, **simulator_ids)
    try:
        fleet = WorkerFleet(None, reload_interval=0.2)

        async def scenario() -> None:
            await add_connector(
                "pair", pair, "pw-p", bind_mode="tx_rx", window=50, smsc_id_style=id_style
            )
            await set_route("all", "pair")
            await until(
                lambda: LinkStatus.objects.filter(connector="pair", state="bound").count() == 2,
                what="transmitter and receiver bound",
            )
            await asyncio.gather(*(send(f"4477{i:08d}") for i in range(300)))
            await until(all_delivered(300), what="300 delivered")

        asyncio.run(run_fleet(fleet, scenario))
        assert min(int(r.id_str, 16 if simulator_ids else 10) for r in pair.submits()) == 1
        receipts = Receipt.objects.select_related("part__message")
        assert receipts.count() == 300 and not receipts.filter(part__isnull=True).exists()
        wrong = [r.source_addr for r in receipts if r.source_addr != r.part.message.dst]
        assert not wrong  # each receipt on the message it reports on
    finally:
        pair.stop()


def test_a_connector_whose_settings_cannot_work_fails_alone():
    a = smsc("smsapi", "secret")
    try:
        fleet = WorkerFleet(default_config(a), reload_interval=0.2)

        async def scenario() -> None:
            await add_connector("broken", a, "secret", tls=True, tls_ca="/nonexistent/ca.pem")
            await until(
                lambda: LinkStatus.objects.filter(
                    connector="broken", state="disconnected", detail__contains="connection failed"
                ).exists(),
                what="the broken connector reported down",
            )
            body = await send("3361234000")
            await until(all_delivered(1), what="the default connector still delivers")
            assert body["connector"] == "default"

        asyncio.run(run_fleet(fleet, scenario))  # run_fleet raises if the fleet died
    finally:
        a.stop()


def test_a_password_from_the_workers_environment_binds_and_a_missing_one_fails_alone(
    settings, monkeypatch
):
    settings.SMPP_DEFAULT_CONNECTOR = False
    a, b = smsc("a", "pw-a"), smsc("b", "pw-b")
    monkeypatch.setenv("SMSC_A_PASSWORD", "pw-a")
    monkeypatch.delenv("SMSC_B_PASSWORD", raising=False)
    try:
        fleet = WorkerFleet(None, reload_interval=0.2)

        async def scenario() -> None:
            await add_connector("a", a, "", password_variable="SMSC_A_PASSWORD")
            await add_connector("b", b, "pw-b", password_variable="SMSC_B_PASSWORD")
            await set_route("all", "a,b")
            await until(
                lambda: LinkStatus.objects.filter(
                    connector="b",
                    state="disconnected",
                    detail="password variable SMSC_B_PASSWORD is not set in the worker's "
                    "environment",
                ).exists(),
                what="b reported unusable",
            )
            await until(
                lambda: LinkStatus.objects.filter(connector="a", state="bound").exists(),
                what="a bound with the password from the environment",
            )
            await send("4477000001")
            await until(all_delivered(1), what="delivered through a")

        asyncio.run(run_fleet(fleet, scenario))
        assert len(a.submits()) == 1 and not b.submits()
        assert b.stats()["binds"] == 0  # never tried with the stored password instead
    finally:
        a.stop()
        b.stop()


# --- failover ----------------------------------------------------------------------------------


def test_when_an_smsc_dies_in_the_middle_of_5000_messages_the_rest_fail_over(settings):
    settings.SMPP_DEFAULT_CONNECTOR = False
    a, b = smsc("a", "pw-a"), smsc("b", "pw-b")
    try:
        fleet = WorkerFleet(None, reload_interval=0.2)

        async def scenario() -> None:
            await add_connector("a", a, "pw-a", failover_after=1.0, max_rate=1000)
            await add_connector("b", b, "pw-b")
            await set_route("all", "a,b")
            await until(
                lambda: LinkStatus.objects.filter(state="bound").count() == 2, what="two binds"
            )
            bodies = await asyncio.gather(*(send(f"4477{i:08d}") for i in range(5000)))
            assert {body["connector"] for body in bodies} == {"a"}
            await until(lambda: len(a.submits()) >= 1000, what="a under way")
            await sync_to_async(a.stop)()  # a dies mid-run
            await until(
                lambda: (
                    not Message.objects.filter(state=State.QUEUED).exists()
                    and not Message.objects.filter(state=State.SUBMITTING).exists()
                ),
                timeout=90,
                what="nothing left queued",
            )

        asyncio.run(run_fleet(fleet, scenario))
        counts = submits_by_dst(a, b)
        assert len(counts) == 5000  # every message reached an SMSC
        assert len(b.submits()) > 1000  # the rest went through b
        twice = {dst for dst, n in counts.items() if n > 1}
        flagged = set(
            Message.objects.filter(possibly_duplicated=True).values_list("dst", flat=True)
        )
        assert twice <= flagged  # nothing sent twice unflagged
        moved = Message.objects.filter(connector="b")
        assert moved.count() == len({r.destination_addr for r in b.submits()})
        assert set(moved.values_list("state", flat=True)) == {State.DELIVERED}
    finally:
        a.stop()
        b.stop()


# --- several workers (PostgreSQL) ------------------------------------------------------------


def test_two_workers_share_four_binds_and_take_over_from_one_killed(start_worker):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one worker, which holds every bind")
    with SimulatorThread(
        SimulatorConfig(port=0, system_id="shared", password="pw", receipt_delay=0)
    ) as smsc:
        Connector.objects.create(
            name="shared",
            host="127.0.0.1",
            port=smsc.port,
            system_id="shared",
            password="pw",
            binds=4,
        )
        Route.objects.create(name="all", connectors="shared")
        env = {
            "SMPP_DEFAULT_CONNECTOR": "off",
            "SMPP_CONNECTOR_RELOAD": "0.5",
            "SMPP_RESPONSE_TIMEOUT": "1",
            "SMPP_LEASE_SECONDS": "5",
        }
        first = start_worker(smsc.port, **env)
        wait_until(lambda: smsc.stats()["sessions_bound"] == 4, timeout=30)
        second = start_worker(smsc.port, **env)

        def owners() -> collections.Counter:
            return collections.Counter(BindClaim.objects.values_list("owner", flat=True))

        # Spread: two binds each, and never more than four sessions.
        wait_until(lambda: sorted(owners().values()) == [2, 2], timeout=30)
        wait_until(lambda: smsc.stats()["sessions_bound"] == 4, timeout=30)
        first_id = next(o for o in owners() if f"-{first.process.pid}-" in o)
        second_id = next(o for o in owners() if f"-{second.process.pid}-" in o)

        messages = store.create_messages(
            [new_message(dst=f"4477{i:08d}", connector="shared") for i in range(3000)]
        )
        wait_until(lambda: len(smsc.submits()) > 300, timeout=30)
        first.stop(signal.SIGKILL)
        # The survivor takes the dead worker's binds over once their claims run out.
        wait_until(lambda: owners() == {second_id: 4}, timeout=30)
        wait_until(lambda: smsc.stats()["sessions_bound"] == 4, timeout=30)
        assert first_id not in owners()
        wait_until(
            lambda: (
                not Message.objects.filter(
                    pk__in=[m.pk for m in messages], state__in=[State.QUEUED, State.SUBMITTING]
                ).exists()
            ),
            timeout=90,
        )
        counts = collections.Counter(r.destination_addr for r in smsc.submits())
        assert len(counts) == 3000  # every message reached the SMSC
        twice = {dst for dst, n in counts.items() if n > 1}
        flagged = set(
            Message.objects.filter(possibly_duplicated=True).values_list("dst", flat=True)
        )
        assert twice <= flagged  # nothing sent twice unflagged
        assert second.stop() == 0
        assert not BindClaim.objects.exists()  # a clean stop gives its binds back
