"""What the worker holds when the link goes: parts claimed and not sent go back to
the queue at once, unmarked; results already read are written all the same."""

from __future__ import annotations

import asyncio
import threading

import pytest

from messaging import store
from messaging.models import MessagePart
from messaging.outbound import split_for_smsc
from messaging.states import State
from smpp.session import SessionConfig, SMPPSession
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from smpp_gateway.worker import SMPPWorker, WorkerConfig

pytestmark = pytest.mark.django_db(transaction=True)


def _queue(count: int) -> list[int]:
    split = split_for_smsc("x", "gsm7")
    messages = store.create_messages(
        [store.NewMessage(dst=f"4{i:07d}", text="x", split=split) for i in range(count)]
    )
    return [m.pk for m in messages]


def _worker(port: int = 2775) -> SMPPWorker:
    session = SessionConfig(host="127.0.0.1", port=port, system_id="smsapi", password="secret")
    return SMPPWorker(WorkerConfig.from_settings(session=session))


def _close(worker: SMPPWorker) -> None:
    worker.close_database_threads()


async def _link_lost_as_the_claim_ends(worker: SMPPWorker) -> None:
    """Bind, let the feed claim parts, and lose the link once the claim is done but
    before the feed has taken its parts in (as ``_serve`` does: cancel the feed)."""
    session = SMPPSession(
        worker.config.session, worker.answers.on_response, worker.intake.on_deliver
    )
    await session.open()
    reader = asyncio.ensure_future(session.run())
    worker.link.session = session
    feed = asyncio.ensure_future(worker.feeder.run(session))
    await asyncio.sleep(0)  # the feed asks for parts and waits for the claim
    # The database thread takes one task at a time: once this one has run, the claim
    # has ended. Blocking the loop meanwhile keeps the feed from taking its parts in.
    worker.claims.submit(lambda: None).result(timeout=10)
    session.close("link lost")
    feed.cancel()
    await asyncio.gather(feed, reader, return_exceptions=True)
    worker.link.session = None
    await asyncio.sleep(0.05)  # the hand-back comes through the claim's callback
    await worker.results.flush_all()


def test_parts_claimed_as_the_link_goes_are_handed_back_unsent():
    ids = _queue(30)
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0)) as smsc:
        worker = _worker(smsc.port)
        try:
            asyncio.run(_link_lost_as_the_claim_ends(worker))
        finally:
            _close(worker)
        assert smsc.stats()["submits_received"] == 0
    parts = MessagePart.objects.filter(message_id__in=ids)
    assert parts.count() == 30
    # Back in the queue as they were: not left claimed until the lease runs out,
    # then sent marked possibly duplicated though they never left.
    assert set(parts.values_list("state", "attempts", "possibly_duplicated")) == {
        (State.QUEUED, 0, False)
    }


async def _write_cancelled_while_queued(worker: SMPPWorker) -> None:
    """A write of results waits behind other work in the database thread when the
    link goes and ``_serve`` cancels the flush loop."""
    gate = threading.Event()
    worker.db.submit(gate.wait, 10)  # the database thread is busy
    flush = asyncio.ensure_future(worker.results.flush())
    await asyncio.sleep(0.05)  # its write is queued behind
    flush.cancel()
    await asyncio.gather(flush, return_exceptions=True)
    gate.set()
    await asyncio.wrap_future(worker.db.submit(lambda: None))


def test_results_being_written_as_the_link_goes_are_written():
    (message_id,) = _queue(1)
    worker = _worker()
    (part,) = store.claim_parts(worker.worker_id, 10, 60)
    accepted = store.SubmitOutcome(
        part_id=part.part_id,
        message_id=message_id,
        outcome=store.SubmitOutcome.SUBMITTED,
        command_status=0,
        smsc_id="abc123",
    )
    worker.results.pending.outcomes.append(accepted)
    try:
        asyncio.run(_write_cancelled_while_queued(worker))
    finally:
        _close(worker)
    # Dropped, the SMSC's acceptance was forgotten: the part stayed claimed and,
    # once its lease ran out, was sent a second time.
    assert MessagePart.objects.values_list("state", "smsc_id").get(pk=part.part_id) == (
        State.SUBMITTED,
        "abc123",
    )
