"""The fixed cost of one message (issue 23): new messages handed straight to the worker
of the same process (``messaging.handoff``), and a waited-for result written at once.

The store writes them exactly as a claim would have (compared field by field with
``claim_parts``' own answer); the feeder takes them only while it waits for work,
sends them without a claim, and hands them back when its link has gone; and, over
real TCP to the simulator, a message sent through the API's intake while the worker
waits reaches the SMSC, gets its receipt, and was never claimed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from messaging import handoff, store
from messaging.api.intake import MessageIntake
from messaging.models import Message, MessagePart, StateTransition
from messaging.states import State
from messaging.store import HandOver, SubmitOutcome, create_handed_over
from smpp.flow import SubmitRefusals
from smpp.session import SessionConfig
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from smpp_gateway.worker import SMPPWorker, WorkerConfig
from smpp_gateway.worker.answers import SubmitAnswers
from tests.factories import new_message
from tests.test_worker_parts import FakeSession, config, feeder_parts, part

LONG_TEXT = "long message " * 30  # three parts


def _without_ids(claimed: store.ClaimedPart) -> dict:
    """Its fields but its ids and its concatenation reference (each message has its own)."""
    fields = dataclasses.asdict(claimed)
    del fields["part_id"], fields["message_id"]
    if claimed.esm_class & 0x40:  # the UDH's 8-bit reference: 05 00 03 <ref> <total> <seq>
        text = fields["short_message"]
        fields["short_message"] = text[:3] + text[4:]
    return fields | {"sar": None}


# --- the store -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.store
@pytest.mark.parametrize("text", ["hi", LONG_TEXT])
def test_handed_over_parts_are_what_a_claim_would_have_made_of_them(text):
    (queued,) = store.create_messages([new_message(text, notify_channel="c1")])
    claimed = sorted(store.claim_parts("w1", 10, 60), key=lambda p: p.index)
    hand_over = HandOver(worker_id="w1", lease_seconds=60, room=10)
    (message,), handed = create_handed_over([new_message(text, notify_channel="c1")], hand_over)

    # The same submit_sm fields; a reference of its own for a long message's handset.
    assert [p.message_id for p in handed] == [message.pk] * len(claimed)
    assert [_without_ids(p) for p in handed] == [_without_ids(p) for p in claimed]
    if len(claimed) > 1:  # one reference for all its parts, not the other message's
        (reference,) = {p.short_message[3] for p in handed}
        assert {p.short_message[3] for p in claimed} == {reference - 1}
    # The same rows: parts leased to the worker, the message submitting, the transitions.
    columns = ("state", "worker", "attempts", "possibly_duplicated")
    rows = {
        m: list(MessagePart.objects.filter(message_id=m).order_by("index").values_list(*columns))
        for m in (queued.pk, message.pk)
    }
    assert rows[message.pk] == rows[queued.pk]
    assert rows[message.pk][0][:3] == (State.SUBMITTING, "w1", 1)
    leases = MessagePart.objects.filter(message_id=message.pk).values_list("lease_until", flat=True)
    assert all(lease > timezone.now() + timedelta(seconds=50) for lease in leases)
    assert Message.objects.get(pk=message.pk).state == State.SUBMITTING

    def moves(m: int) -> list:
        return list(
            StateTransition.objects.filter(message_id=m)
            .order_by("id")
            .values_list("from_state", "to_state")
        )

    assert moves(message.pk) == moves(queued.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.store
def test_only_whole_messages_due_now_are_handed_over_while_the_room_lasts():
    later = timezone.now() + timedelta(hours=1)
    batch = [
        new_message("scheduled", schedule_at=later),
        new_message("expired", validity_until=timezone.now() - timedelta(seconds=1)),
        new_message("due"),
        new_message(LONG_TEXT),  # three parts: more than the room left
        new_message("after it"),  # kept in order behind it
    ]
    messages, handed = create_handed_over(batch, HandOver("w1", 60, room=2))
    assert [p.message_id for p in handed] == [messages[2].pk]
    states = dict(Message.objects.values_list("text", "state"))
    assert states == {
        "scheduled": State.QUEUED,
        "expired": State.QUEUED,
        "due": State.SUBMITTING,
        LONG_TEXT: State.QUEUED,
        "after it": State.QUEUED,
    }
    # What was not handed over is in the queue as create_messages leaves it.
    queued = MessagePart.objects.exclude(message_id=messages[2].pk)
    assert set(queued.values_list("state", "worker", "attempts")) == {(State.QUEUED, "", 0)}


# --- the feeder ------------------------------------------------------------------------


async def until(condition, timeout: float = 5.0) -> None:
    """Let the event loop run until ``condition()`` holds (a loaded machine may
    need more than a few turns of it); fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not within {timeout} s: {condition.__doc__ or condition}")


@pytest.fixture
def no_bells(monkeypatch):
    """No channel layer for the feeder: bells other tests rang into the process's
    in-memory layer would wake it (a bell is what these tests play themselves)."""
    monkeypatch.setattr("smpp_gateway.worker.feeder.get_channel_layer", lambda: None)


async def test_the_feeder_takes_parts_only_while_it_waits_for_work_and_sends_them_unclaimed(
    no_bells,
):
    feeder, db, pending, _ = feeder_parts()
    assert feeder.room() == 0  # not running
    session = FakeSession(window_free=10)
    task = asyncio.ensure_future(feeder.run(session))  # type: ignore[arg-type]
    await until(lambda: db.claims)
    assert handoff.local_taker() is None  # claiming: it has work of its own to look at
    db.claims[0].set_result([])  # the queue is empty: it waits for work
    await until(lambda: handoff.local_taker() is feeder)
    assert feeder.room() == 100

    feeder.take([part(1), part(2)])
    await until(lambda: len(session.submitted) == 2 and feeder.room() == 100)
    assert [p.part_id for p in session.submitted] == [1, 2]
    assert len(db.claims) == 1  # no claim after parts that were never queued

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert handoff.local_taker() is None and feeder.room() == 0
    # Handed over after the link went (the commit ended late): back to the queue.
    feeder.take([part(3)])
    assert [(o.part_id, o.outcome) for o in pending.outcomes] == [(3, SubmitOutcome.UNSENT)]


async def test_a_bell_while_parts_are_handed_over_sends_the_feeder_to_the_queue_again(no_bells):
    feeder, db, _, _ = feeder_parts()
    session = FakeSession(window_free=10)
    task = asyncio.ensure_future(feeder.run(session))  # type: ignore[arg-type]
    await until(lambda: db.claims)
    db.claims[0].set_result([])
    await until(lambda: handoff.local_taker() is feeder)
    feeder.take([part(1)])
    feeder._drained = False  # what a bell heard while waiting does
    await until(lambda: len(db.claims) == 2)  # the queue is looked at again
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --- over TCP, through the intake --------------------------------------------------------


async def _send_through_the_intake(worker: SMPPWorker, smsc: SimulatorThread) -> list[int]:
    run = asyncio.ensure_future(worker.run())
    try:
        for _ in range(500):  # bound, and waiting for work
            if handoff.local_taker() is not None:
                break
            await asyncio.sleep(0.01)
        assert handoff.local_taker() is worker.feeder
        intake = MessageIntake()
        messages = [
            await intake.store(new_message(f"hello {n}", register="final")) for n in range(5)
        ]
        ids = [m.pk for m in messages]
        delivered = sync_to_async(
            lambda: Message.objects.filter(pk__in=ids, state=State.DELIVERED).count()
        )
        for _ in range(500):
            if await delivered() == 5:
                break
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 20)
    return ids


@pytest.mark.django_db(transaction=True)
@pytest.mark.store
def test_a_message_sent_while_the_worker_waits_is_handed_over_over_tcp(monkeypatch):
    claimed: list[int] = []
    claim_parts = store.claim_parts

    def counting_claim(*args):
        parts = claim_parts(*args)
        claimed.extend(p.message_id for p in parts)
        return parts

    monkeypatch.setattr(store, "claim_parts", counting_claim)
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0)) as smsc:
        session = SessionConfig(
            host="127.0.0.1", port=smsc.port, system_id="smsapi", password="secret"
        )
        worker = SMPPWorker(WorkerConfig.from_settings(session=session))
        ids = asyncio.run(_send_through_the_intake(worker, smsc))
        assert smsc.stats()["submits_received"] == 5
    assert not set(claimed) & set(ids)  # none of them passed a claim
    parts = MessagePart.objects.filter(message_id__in=ids)
    assert set(parts.values_list("state", "attempts", "possibly_duplicated")) == {
        (State.DELIVERED, 1, False)
    }
    assert set(Message.objects.filter(pk__in=ids).values_list("state", flat=True)) == {
        State.DELIVERED
    }


# --- the answer a request waits for --------------------------------------------------------


async def test_a_result_a_request_waits_for_is_written_without_the_gathering_pause():
    feeder, db, pending, _ = feeder_parts(config(flush_interval=60.0))
    answers = SubmitAnswers(
        feeder.results.link, pending, feeder.receipt_wait, feeder.rate, SubmitRefusals(60)
    )
    writing = asyncio.ensure_future(feeder.results.flush_loop())
    try:
        answers.on_response(part(1, waited=True), 0, "abc", 7)
        for _ in range(200):
            if any(name == "record_results" for name, _ in db.calls):
                break
            await asyncio.sleep(0.01)
        assert [name for name, _ in db.calls] == ["record_results"]
        assert not pending.awaited
        answers.on_response(part(2), 0, "def", 8)  # nobody waits: gathered with others
        await asyncio.sleep(0.2)
        assert [name for name, _ in db.calls] == ["record_results"]
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
