"""A hostile or broken SMSC (issue 18): each of the simulator's hostile fault modes,
over real TCP, against a real worker (in this process) and the real store.

Each shows: nothing lost, nothing matched to the wrong message, no endless
redelivery, and a normal message sent afterwards is delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from django.db import DataError, OperationalError

from messaging.models import IncomingMessage, Message, MessagePart, Receipt, StateTransition
from messaging.states import State
from messaging.store import Notifications
from smpp.session import SessionConfig, SMPPSession
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.server import JUNK_SOURCE
from smpp_gateway.simulator.thread import SimulatorThread
from smpp_gateway.worker import SMPPWorker, WorkerConfig
from tests.conftest import wait_until
from tests.test_worker_poison_part import RunningWorker, queue, states

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def smsc(**faults) -> SimulatorThread:
    return SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.02, seed=3, **faults))


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


def normal_message_afterwards(simulator: SimulatorThread, running: RunningWorker, **healthy):
    """The SMSC behaves again: a normal message goes through the same worker."""
    simulator.set_config(**healthy)
    (message_id,) = queue(dst="4915559999", text="afterwards")
    wait_until(lambda: delivered([message_id]), timeout=30)
    assert running.running and running.error is None


def each_receipt_on_its_own_part() -> None:
    """Every matched receipt sits on the part whose SMSC id it carries (as the SMSC gave it)."""
    for smsc_id, part_id in Receipt.objects.filter(part__isnull=False).values_list(
        "smsc_id", "part_id"
    ):
        assert MessagePart.objects.get(pk=part_id).smsc_id == smsc_id


# --- submit_sm_resp -------------------------------------------------------------------------


def test_message_ids_longer_than_smpp_allows_are_kept_whole(worker_on):
    with smsc(message_id_length=100) as simulator:
        running = worker_on(simulator)
        ids = queue(count=20) + queue(text="y" * 400, count=3)  # long ones: 3 parts each
        wait_until(lambda: delivered(ids), timeout=30)
        parts = list(
            MessagePart.objects.filter(message_id__in=ids).values_list("smsc_id", flat=True)
        )
        assert len(parts) == 29 and len(set(parts)) == 29  # none cut, none shared
        assert {len(p) for p in parts} == {100}
        sent = {r.id_str for r in simulator.submits()}
        assert set(parts) == sent
        assert simulator.stats()["submits_received"] == 29  # none sent twice
        each_receipt_on_its_own_part()
        assert not Receipt.objects.filter(matched_at__isnull=True).exists()
        normal_message_afterwards(simulator, running, message_id_length=0)


def test_message_ids_longer_than_the_store_keeps_fail_their_part_once(worker_on):
    with smsc(message_id_length=300) as simulator:
        running = worker_on(simulator)
        ids = queue(count=5)
        wait_until(lambda: states(ids) == [State.FAILED] * 5, timeout=30)
        for message_id in ids:
            detail = StateTransition.objects.filter(message_id=message_id).latest("id").detail
            assert detail == "SMSC message_id longer than 255 characters (300)"
        time.sleep(0.5)
        assert simulator.stats()["submits_received"] == 5  # never retried
        assert not MessagePart.objects.filter(message_id__in=ids, smsc_id__isnull=False).exists()
        normal_message_afterwards(simulator, running, message_id_length=0)


def test_an_empty_message_id_with_status_0_fails_the_part(worker_on):
    with smsc(empty_id_rate=1.0) as simulator:
        running = worker_on(simulator)
        ids = queue(count=4)
        wait_until(lambda: states(ids) == [State.FAILED] * 4, timeout=30)
        for message_id in ids:
            detail = StateTransition.objects.filter(message_id=message_id).latest("id").detail
            assert detail == "SMSC accepted without a message_id"
        # The receipts the SMSC still sends are kept, matched to nothing.
        wait_until(lambda: simulator.stats()["receipts_acknowledged"] == 4)
        assert Receipt.objects.filter(matched_at__isnull=True).count() == 4
        assert simulator.stats()["submits_received"] == 4
        normal_message_afterwards(simulator, running, empty_id_rate=0.0)


# --- deliver_sm --------------------------------------------------------------------------------


def test_receipts_with_nul_bytes_are_kept(worker_on):
    with smsc(receipt_nul=True) as simulator:
        running = worker_on(simulator)
        ids = queue(count=10)
        wait_until(lambda: delivered(ids), timeout=30)
        stats = simulator.stats()
        assert stats["receipts_acknowledged"] == 10 and stats["deliver_errors"] == 0
        texts = list(Receipt.objects.values_list("raw_text", flat=True))
        assert len(texts) == 10 and all("\ufffd\ufffdnul\ufffd" in t for t in texts)
        each_receipt_on_its_own_part()
        normal_message_afterwards(simulator, running, receipt_nul=False)


def test_truncated_deliver_sm_are_refused_and_never_published(worker_on):
    with smsc(truncated_deliver_rate=1.0) as simulator:
        running = worker_on(simulator)
        ids = queue(count=10)
        wait_until(lambda: delivered(ids), timeout=30)
        wait_until(lambda: simulator.stats()["deliveries_refused"] == 10)
        stats = simulator.stats()
        assert stats["truncated_sent"] == 10  # each once: refused for good, not resent
        assert stats["truncated_accepted"] == 0
        assert not IncomingMessage.objects.filter(src=JUNK_SOURCE).exists()
        normal_message_afterwards(simulator, running, truncated_deliver_rate=0.0)


def test_an_incoming_message_from_an_oversize_address_is_refused_for_good(worker_on):
    with smsc(mo_source_addr_length=30) as simulator:
        running = worker_on(simulator)
        wait_until(lambda: simulator.stats()["binds"] == 1)
        simulator.inject_mo("4917", "12345", "too long a sender")
        simulator.set_config(mo_source_addr_length=0)
        simulator.inject_mo("4917000002", "12345", "a good one")
        ids = queue(count=3)  # receipts in the same batches
        wait_until(lambda: IncomingMessage.objects.filter(text="a good one").exists())
        wait_until(lambda: delivered(ids))
        wait_until(lambda: simulator.stats()["deliveries_refused"] == 1)
        time.sleep(0.3)
        stats = simulator.stats()
        assert stats["mo_sent"] == 2 and stats["mo_acknowledged"] == 1  # not resent
        assert IncomingMessage.objects.count() == 1
        normal_message_afterwards(simulator, running)


class _Item:
    def __init__(self, good: bool):
        self.good = good


def test_one_deliver_sm_the_store_refuses_never_takes_its_batch_down():
    """The fall-back the worker takes when a batch of deliver_sm cannot be written:
    each on its own; the one the database refuses gets a permanent error, the others
    0; a database that is down gets "retry" for all."""
    session = SessionConfig(host="127.0.0.1", port=1, system_id="x", password="y")
    worker = SMPPWorker(WorkerConfig.from_settings(session=session))
    writes = []

    def write(items, connector):
        writes.append(len(items))
        if not all(item.good for item in items):
            raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return Notifications()

    def down(items, connector):
        raise OperationalError("connection refused")

    items = [_Item(True), _Item(False), _Item(True)]
    try:
        statuses = asyncio.run(worker.results.store_each(items, write, Notifications()))
        assert statuses == [0, 0x65, 0]
        assert writes == [3, 1, 1, 1]
        statuses = asyncio.run(worker.results.store_each(items, down, Notifications()))
        assert statuses == [0x64] * 3  # the SMSC keeps them for later
    finally:
        worker.close_database_threads()


# --- the link ----------------------------------------------------------------------------------


def test_pdus_before_the_bind_response_are_not_wrong_credentials(worker_on, caplog):
    with smsc(pdus_before_bind_resp=True) as simulator:
        running = worker_on(simulator)
        ids = queue(count=3)
        wait_until(lambda: delivered(ids), timeout=30)
        # The early incoming message was answered "later" and came again once bound.
        wait_until(lambda: IncomingMessage.objects.filter(text="early").count() == 1)
        stats = simulator.stats()
        assert stats["binds"] == 1 and stats["pre_bind_pdus_sent"] == 2
        assert "SMPP_USER" not in caplog.text  # not reported as wrong credentials
        normal_message_afterwards(simulator, running)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        # The flood is seen for what it is: the link reset by the request rate.
        ({}, "the SMSC sends requests faster than 200 a second: link reset"),
        # Or, with no limit on the rate, our answers pile up: dropped past the mark.
        (
            {"peer_request_rate": 0, "write_buffer_limit": 64 * 1024},
            "the SMSC does not read: ",
        ),
    ],
    ids=["request rate", "write buffer"],
)
def test_an_enquire_link_flood_while_not_reading_drops_the_link(worker_on, caplog, options, reason):
    with smsc(flood_after_pdus=8, flood_rate=200_000) as simulator:
        running = worker_on(simulator, **options)
        ids = [queue(dst=f"49155{n:05d}", text=f"flood {n}")[0] for n in range(30)]
        wait_until(lambda: simulator.stats()["floods"] >= 1, timeout=20)
        wait_until(lambda: f"SMPP disconnected: {reason}" in caplog.text, timeout=30)
        simulator.set_config(flood_after_pdus=0)
        wait_until(lambda: delivered(ids), timeout=60)
        # Whatever went out twice (in flight as the link went) carries the mark.
        texts = [r.short_message.decode() for r in simulator.submits()]
        twice = {t for t in texts if texts.count(t) > 1}
        marked = set(
            Message.objects.filter(pk__in=ids, possibly_duplicated=True).values_list(
                "text", flat=True
            )
        )
        assert twice <= marked
        each_receipt_on_its_own_part()
        normal_message_afterwards(simulator, running)


async def _read_while_unanswered(port: int, total: int, limit: int) -> tuple[int, int]:
    """A session whose owner answers nothing: how many deliver_sm reach it, then how
    many once it answers them all."""
    received: list[int] = []
    config = SessionConfig(
        host="127.0.0.1",
        port=port,
        system_id="smsapi",
        password="secret",
        max_unanswered_delivers=limit,
        link_timeout=60,
    )
    session = SMPPSession(config, lambda *args: None, lambda pdu, seq: received.append(seq))
    await session.open()
    reader = asyncio.ensure_future(session.run())
    try:
        last = -1
        while len(received) != last:  # until it stops growing
            last = len(received)
            await asyncio.sleep(0.3)
        held = len(received)
        answered = 0
        for _ in range(200):
            for sequence in received[answered:]:
                session.respond_deliver(sequence)
            answered = len(received)
            if answered == total:
                break
            await asyncio.sleep(0.05)
        return held, len(received)
    finally:
        session.close("test over")
        await asyncio.gather(reader, return_exceptions=True)


def test_deliver_sm_not_yet_answered_are_bounded():
    """An SMSC that sends deliver_sm without waiting for answers: past the limit the
    session stops reading (TCP holds the rest), and reads on as answers go out."""
    total = 20_000  # about 900 kB: more than one read takes
    with SimulatorThread(SimulatorConfig(port=0, deliver_window=0)) as simulator:
        wait_until(lambda: simulator.port)
        for n in range(total):
            simulator.simulator.loop.call_soon_threadsafe(
                simulator.simulator.inject_mo, "4917000001", "1", f"m{n}"
            )
        held, finally_read = asyncio.run(_read_while_unanswered(simulator.port, total, 50))
    assert held < total // 2  # not read while unanswered
    assert finally_read == total  # nothing lost: read once answered


def test_a_receipt_with_fields_the_columns_cannot_hold_is_stored():
    """NUL in the text, addresses longer than the columns, an id longer than any part's:
    stored (sanitised, the whole addresses in the TLVs), never refused for ever."""
    from messaging import store
    from smpp.pdu_fast import decode_deliver_sm
    from smpp_gateway.deliver import read_deliver
    from smpp_gateway.simulator.wire import deliver_sm

    long_address = "4" * 40
    pdu = deliver_sm(
        9,
        source_addr=long_address,
        destination_addr="SENDER",
        esm_class=0x04,
        short_message=b"id:77 stat:DELIVRD err:000 text:a\0b",
        receipted_message_id="z" * 300,
        address_limit=40,
        message_id_limit=300,
    )
    receipt = read_deliver(decode_deliver_sm(pdu))
    store.record_results((), [receipt])
    stored = Receipt.objects.get()
    assert stored.raw_text.endswith("a\ufffdb") and stored.stat == "DELIVRD"
    assert stored.source_addr == long_address[:21]
    assert stored.tlvs["source_addr"] == long_address
    assert stored.smsc_id == "" and stored.matched_at is None  # kept, matched to nothing
