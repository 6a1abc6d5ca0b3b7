"""The worker's parts on their own, with a fake session and a fake database thread.

No TCP and no database: each part is given the few collaborators it calls (the
fakes below are ours, as is what they stand for). The end-to-end worker tests
(real TCP to the simulator) are in test_worker_*.py, test_end_to_end.py and co.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import DataError, OperationalError
from django.utils import timezone

from messaging import store
from messaging.store import ClaimedPart, Notifications, ReceiptIn, SubmitOutcome
from smpp.command_status import ESME_RINVBNDSTS, ESME_RINVDSTADR, ESME_RTHROTTLED
from smpp.flow import AdaptiveRate, SubmitRefusals
from smpp.session import BindRefused, LinkError, SessionConfig
from smpp.smsc_ids import IdStyle, match_key, match_keys
from smpp_gateway.worker import SMPPWorker, WorkerConfig
from smpp_gateway.worker.answers import SubmitAnswers
from smpp_gateway.worker.feeder import (
    Feeder,
    claim_ahead,
    must_take_claim,
    should_claim,
    stale,
    store_behind,
)
from smpp_gateway.worker.intake import IncomingDeliveries
from smpp_gateway.worker.link import Link
from smpp_gateway.worker.receipt_wait import ReceiptWait
from smpp_gateway.worker.results import (
    RECEIVER_PERMANENT,
    RECEIVER_RETRY_LATER,
    Pending,
    ResultWriter,
    store_receipts,
)

SESSION = SessionConfig(host="127.0.0.1", port=1, system_id="x", password="y", window=10)


def config(**changes: Any) -> WorkerConfig:
    return WorkerConfig(session=SESSION, **changes)


def part(part_id: int = 1, **changes: Any) -> ClaimedPart:
    fields = dict(
        part_id=part_id,
        message_id=100 + part_id,
        index=1,
        src="bart",
        src_ton=5,
        src_npi=0,
        dst="4915550001",
        dst_ton=1,
        dst_npi=1,
        data_coding=0,
        esm_class=0,
        short_message=b"hi",
        sar=None,
        use_payload=False,
        register="",
        priority=0,
        validity_until=None,
        attempts=1,
    )
    fields.update(changes)
    return ClaimedPart(**fields)


def receipt(smsc_id: str) -> ReceiptIn:
    return ReceiptIn(
        smsc_id=smsc_id,
        match_keys=match_keys(smsc_id),
        stat="DELIVRD",
        message_state=2,
        error_code=0,
        submitted_date=None,
        done_date=None,
        source_addr="4915550001",
        destination_addr="bart",
        raw_text=f"id:{smsc_id} stat:DELIVRD",
        tlvs={},
    )


class FakeSession:
    """The calls the parts make on an ``SMPPSession``, recorded."""

    def __init__(self, window_free: int = 10, bind_id: str = "bind1") -> None:
        self.bind_id = bind_id
        self.window_free = window_free
        self.in_flight = 0
        self.submitted: list[ClaimedPart] = []
        self.responses: list[tuple[int, int]] = []
        self.closed: list[str] = []
        self.fail_submit: dict[int, Exception] = {}  # part_id -> what submit raises

    def submit(self, token: ClaimedPart, **fields: Any) -> int:
        if token.part_id in self.fail_submit:
            raise self.fail_submit[token.part_id]
        assert fields["destination_addr"] == token.dst  # built by submit_fields
        self.submitted.append(token)
        self.window_free -= 1
        return len(self.submitted)

    def respond_deliver(self, sequence: int, status: int = 0) -> None:
        self.responses.append((sequence, status))

    def close(self, reason: str) -> None:
        self.closed.append(reason)

    async def wait_for_window(self) -> None:
        while self.window_free <= 0:
            await asyncio.sleep(0.001)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    async def delivers_read(self) -> None:
        return None


class FakeDatabase:
    """``DatabaseThreads`` without threads: calls run at once, on the caller's thread;
    ``fail`` maps a function to the exception it raises (or a callable deciding)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.fail: dict[Any, Any] = {}
        self.claims: list[Future] = []

    async def run(self, func: Any, *args: Any, executor: Any = None) -> Any:
        self.calls.append((func.__name__, args))
        failure = self.fail.get(func)
        if callable(failure) and not isinstance(failure, BaseException):
            failure = failure(*args)
        if failure is not None:
            raise failure
        return Notifications()

    def submit(self, func: Any, *args: Any) -> Future:
        assert func is store.claim_parts
        future: Future = Future()
        self.calls.append(("claim_parts", args))
        self.claims.append(future)
        return future


class CallingDatabase(FakeDatabase):
    """Calls what it is given (the test's own functions)."""

    async def run(self, func: Any, *args: Any, executor: Any = None) -> Any:
        return func(*args)


def link_with(session: FakeSession | None, db: FakeDatabase | None = None) -> Link:
    link = Link(config(), "w1", db or FakeDatabase(), AdaptiveRate(None), SubmitRefusals(60))
    link.session = session  # type: ignore[assignment]
    return link


# --- the feed's policies -----------------------------------------------------------------------


def test_claim_ahead_is_two_windows_capped_by_the_batch_and_a_seconds_worth():
    assert claim_ahead(500, 10, None) == 100  # at least 100
    assert claim_ahead(500, 100, None) == 200  # two windows
    assert claim_ahead(150, 100, None) == 150  # the claim batch caps it
    assert claim_ahead(500, 100, 150.0) == 150  # a second's worth at the rate...
    assert claim_ahead(500, 100, 5.0) == 100  # ... but never less than a window


def test_one_claim_at_a_time_while_the_buffer_is_short():
    assert should_claim(False, 10, 100)
    assert not should_claim(True, 10, 100)  # one under way
    assert not should_claim(False, 100, 100)  # the buffer is full


def test_a_claim_is_waited_for_only_when_nothing_else_can_be_sent():
    running: Future = Future()
    assert not must_take_claim(None, 0)
    assert must_take_claim(running, 0)  # nothing to send: wait for it
    assert not must_take_claim(running, 5)  # parts to send meanwhile
    running.set_result([])
    assert must_take_claim(running, 5)  # done: take its parts in


def test_sending_waits_for_the_store_when_results_pile_up_or_receipts_come_late():
    assert not store_behind(29, 30, 0, 10, 0.0)
    assert store_behind(30, 30, 0, 10, 0.0)  # three windows not yet written
    assert not store_behind(0, 30, 10, 10, 0.5)  # receipts unanswered, but on time
    assert store_behind(0, 30, 10, 10, 0.6)  # ... and late: the SMSC has a queue of them
    assert not store_behind(0, 30, 9, 10, 0.9)


def test_a_part_is_stale_once_its_deadline_passed():
    assert stale(1.0, 2.0) and not stale(2.0, 1.0)


# --- the feeder --------------------------------------------------------------------------------


def feeder_parts(
    cfg: WorkerConfig | None = None,
) -> tuple[Feeder, FakeDatabase, Pending, AdaptiveRate]:
    cfg = cfg or config()
    db, pending = FakeDatabase(), Pending()
    link = link_with(None, db)
    wait = ReceiptWait(pending, cfg.receipt_wait, cfg.receipt_wait_max)
    results = ResultWriter(cfg, db, link, pending, wait)  # type: ignore[arg-type]
    rate = AdaptiveRate(cfg.max_rate)
    feeder = Feeder(cfg, "w1", db, rate, pending, wait, results)  # type: ignore[arg-type]
    return feeder, db, pending, rate


async def test_the_feeder_claims_ahead_and_fills_the_window():
    feeder, db, pending, rate = feeder_parts()
    session = FakeSession(window_free=10)
    task = asyncio.ensure_future(feeder.run(session))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    ((name, (worker_id, wanted, lease, connector)),) = db.calls
    assert (name, worker_id, wanted, connector) == ("claim_parts", "w1", 100, "")
    db.claims[0].set_result([part(i) for i in range(1, 16)])
    await asyncio.sleep(0.02)
    assert [p.part_id for p in session.submitted] == list(range(1, 11))  # the window's worth
    assert len(feeder.unsent) == 5
    assert rate.sent.rate() == 10
    assert len(db.claims) == 2  # topped up at once, for what the buffer lacks
    assert db.calls[1][1][1] == 100 - 5  # claimed as the buffer went below what it keeps
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Claimed and unsent: back to the queue as it was, not as a duplicate.
    assert [(o.part_id, o.outcome) for o in pending.outcomes] == [
        (i, SubmitOutcome.UNSENT) for i in range(11, 16)
    ]
    assert pending.wanted.is_set() and not feeder.unsent
    # The claim under way when the link went: its parts go back once it ends.
    db.claims[1].set_result([part(50)])
    await asyncio.sleep(0.01)
    assert (pending.outcomes[-1].part_id, pending.outcomes[-1].outcome) == (50, "unsent")


async def test_a_part_that_cannot_be_sent_fails_alone_and_a_stale_one_goes_back():
    feeder, _, pending, rate = feeder_parts()
    session = FakeSession()
    session.fail_submit[2] = ValueError("destination_addr cannot be encoded")
    now = time.monotonic()
    feeder.unsent.extend([(now + 30, part(1)), (now + 30, part(2)), (now - 1, part(3))])
    feeder.unsent.append((now + 30, part(4)))
    assert feeder._send(session, 4)  # type: ignore[arg-type]
    assert [p.part_id for p in session.submitted] == [1, 4]
    failed, unsent = pending.outcomes
    assert (failed.part_id, failed.outcome, failed.bind_id) == (2, "failed", "bind1")
    assert failed.detail == "cannot be sent: destination_addr cannot be encoded"
    assert (unsent.part_id, unsent.outcome) == (3, "unsent")
    assert rate.sent.rate() == 2


async def test_the_feeder_stops_when_the_link_goes_and_keeps_the_part():
    feeder, _, _, _ = feeder_parts()
    session = FakeSession()
    session.fail_submit[2] = LinkError("connection lost")
    feeder.unsent.extend([(1e12, part(1)), (1e12, part(2)), (1e12, part(3))])
    assert not feeder._send(session, 3)  # type: ignore[arg-type]
    assert [p.part_id for _, p in feeder.unsent] == [2, 3]  # first in line again


# --- submit answers ----------------------------------------------------------------------------


def answer_parts(
    cfg: WorkerConfig | None = None, session: FakeSession | None = None
) -> tuple[SubmitAnswers, Pending, ReceiptWait, FakeSession]:
    cfg = cfg or config()
    session = session or FakeSession()
    pending = Pending()
    wait = ReceiptWait(pending, cfg.receipt_wait, cfg.receipt_wait_max)
    rate, refusals = AdaptiveRate(None), SubmitRefusals(60)
    answers = SubmitAnswers(link_with(session), pending, wait, rate, refusals)
    return answers, pending, wait, session


async def test_an_accepted_submit_is_a_result_for_the_next_write():
    answers, pending, _, _ = answer_parts()
    answers.on_response(part(1), 0, " abc123 ", 7)
    (outcome,) = pending.outcomes
    assert (outcome.part_id, outcome.outcome, outcome.smsc_id) == (1, "submitted", "abc123")
    assert (outcome.bind_id, outcome.sequence, outcome.command_status) == ("bind1", 7, 0)
    assert pending.wanted.is_set()


async def test_an_accepted_submit_whose_receipt_will_come_waits_for_it():
    answers, pending, wait, _ = answer_parts()
    answers.on_response(part(1, register="final"), 0, "ABC123", 7)
    assert not pending.outcomes and match_key("ABC123") in wait.held
    answers.on_response(part(2, register="final", waited=True), 0, "def", 8)  # a request waits
    assert [o.part_id for o in pending.outcomes] == [2]


async def test_an_accepted_submit_without_a_usable_id_fails():
    answers, pending, wait, _ = answer_parts()
    answers.on_response(part(1, register="final"), 0, "   ", 7)
    (outcome,) = pending.outcomes
    assert (outcome.outcome, outcome.command_status, outcome.smsc_id) == ("failed", 0, "")
    assert not wait.held


async def test_no_answer_in_time_is_unknown_and_counted_as_a_refusal():
    answers, pending, _, _ = answer_parts()
    answers.on_response(part(1), None, "", 7)
    (outcome,) = pending.outcomes
    assert outcome.outcome == "unknown" and outcome.retry_at is not None
    assert answers.refusals.total(None) == 1


async def test_a_throttled_submit_is_retried_later_and_slows_the_rate():
    answers, pending, _, _ = answer_parts()
    answers.rate.sent.add(100)
    answers.on_response(part(1, attempts=2), ESME_RTHROTTLED, "", 7)
    (outcome,) = pending.outcomes
    assert (outcome.outcome, outcome.command_status) == ("retry", ESME_RTHROTTLED)
    assert outcome.retry_at > timezone.now() + timedelta(seconds=1.5)  # 1 s x attempts
    assert answers.rate.rate == 50  # halved
    assert answers.refusals.total(ESME_RTHROTTLED) == 1


async def test_not_bound_closes_the_session_and_a_permanent_refusal_fails():
    answers, pending, _, session = answer_parts()
    answers.on_response(part(1), ESME_RINVBNDSTS, "", 7)
    assert session.closed and pending.outcomes[0].outcome == "retry"
    answers.on_response(part(2), ESME_RINVDSTADR, "", 8)
    assert (pending.outcomes[1].outcome, pending.outcomes[1].detail) == (
        "failed",
        "ESME_RINVDSTADR",
    )
    assert answers.refusals.total(ESME_RINVDSTADR) == 0  # not a refusal "for now"


# --- the receipt wait --------------------------------------------------------------------------


def accepted(part_id: int, smsc_id: str) -> SubmitOutcome:
    return SubmitOutcome(
        part_id=part_id, message_id=1, outcome=SubmitOutcome.SUBMITTED, smsc_id=smsc_id
    )


async def test_a_receipt_takes_its_held_result_into_the_same_write():
    pending = Pending()
    wait = ReceiptWait(pending, 10.0, 100)
    wait.hold(match_key("abc"), accepted(1, "abc"))
    wait.receipt_came(receipt("ABC"))  # matched by key
    assert [o.part_id for o in pending.outcomes] == [1] and not wait.held
    assert wait.late_share == 0.0


async def test_held_results_are_released_when_their_wait_runs_out():
    pending = Pending()
    wait = ReceiptWait(pending, 0.02, 100)
    wait.hold("a", accepted(1, "a"))
    await asyncio.sleep(0.01)
    wait.hold("b", accepted(2, "b"))
    await asyncio.sleep(0.015)
    assert [o.part_id for o in pending.outcomes] == [1] and list(wait.held) == ["b"]
    await asyncio.sleep(0.02)
    assert [o.part_id for o in pending.outcomes] == [1, 2] and pending.wanted.is_set()
    wait.receipt_came(receipt("a"))  # after its result was written alone: late
    assert wait.late_share == pytest.approx(1 / 64)


async def test_everything_held_is_released_at_once_and_a_repeated_key_is_never_dropped():
    pending = Pending()
    wait = ReceiptWait(pending, 10.0, 100)
    wait.hold("a", accepted(1, "a"))
    wait.hold("a", accepted(2, "a"))  # the same key again: the first goes to the write
    assert [o.part_id for o in pending.outcomes] == [1]
    wait.release(everything=True)
    assert [o.part_id for o in pending.outcomes] == [1, 2] and not wait.held


async def test_a_result_whose_receipt_came_first_does_not_wait():
    pending = Pending()
    wait = ReceiptWait(pending, 10.0, 100)
    wait.receipt_came(receipt("abc"))  # it overtook its response
    assert not wait.try_hold(part(1, register="final"), accepted(1, "abc"))
    assert wait.try_hold(part(2, register="final"), accepted(2, "xyz"))
    full = ReceiptWait(pending, 10.0, 0)  # no room
    assert not full.try_hold(part(3, register="final"), accepted(3, "q"))


# --- the intake --------------------------------------------------------------------------------


def deliver_pdu(**fields: Any) -> SimpleNamespace:
    values = dict(
        command="deliver_sm",
        esm_class=0,
        source_addr=b"4915550001",
        destination_addr=b"bart",
        data_coding=0,
        short_message=b"hello",
    )
    values.update(fields)
    return SimpleNamespace(**values)


async def test_the_intake_queues_receipts_and_messages_with_their_session():
    session = FakeSession()
    pending = Pending()
    wait = ReceiptWait(pending, 10.0, 100)
    wait.hold(match_key("abc"), accepted(1, "abc"))
    intake = IncomingDeliveries(link_with(session), pending, wait, IdStyle.AUTO)
    intake.on_deliver(deliver_pdu(esm_class=4, short_message=b"id:abc stat:DELIVRD err:000"), 5)
    intake.on_deliver(deliver_pdu(), 6)
    ((item, sequence, on),) = pending.receipts
    assert (item.smsc_id, sequence, on) == ("abc", 5, session)
    assert [o.part_id for o in pending.outcomes] == [1]  # its held result comes along
    ((fragment, sequence, on),) = pending.fragments
    assert (fragment.payload, sequence, on) == (b"hello", 6, session)
    assert not session.responses  # answered only after the write


async def test_a_deliver_sm_that_cannot_be_read_is_refused_for_good_at_once():
    session = FakeSession()
    pending = Pending()
    intake = IncomingDeliveries(
        link_with(session), pending, ReceiptWait(pending, 1.0, 10), IdStyle.AUTO
    )
    intake.on_deliver(deliver_pdu(source_addr=b"4" * 200), 9)  # longer than the store holds
    assert session.responses == [(9, RECEIVER_PERMANENT)]
    assert not pending


# --- the result writer -------------------------------------------------------------------------


def writer_parts(
    cfg: WorkerConfig | None = None,
) -> tuple[ResultWriter, FakeDatabase, Pending, FakeSession]:
    cfg = cfg or config()
    db, pending, session = FakeDatabase(), Pending(), FakeSession()
    link = link_with(session, db)
    wait = ReceiptWait(pending, cfg.receipt_wait, cfg.receipt_wait_max)
    writer = ResultWriter(cfg, db, link, pending, wait)  # type: ignore[arg-type]
    return writer, db, pending, session


async def test_one_write_takes_results_and_receipts_then_answers_the_smsc():
    writer, db, pending, session = writer_parts()
    old_session = FakeSession(bind_id="old")
    pending.outcomes.append(accepted(1, "a"))
    pending.receipts.append((receipt("a"), 5, session))
    pending.receipts.append((receipt("b"), 6, old_session))  # came before a reconnection
    await writer.flush()
    ((name, (outcomes, receipts, _, connector, id_style)),) = db.calls
    assert name == "record_results" and len(outcomes) == 1 and len(receipts) == 2
    assert (connector, id_style) == ("", "auto")  # the default connector's worker
    assert session.responses == [(5, 0)]
    assert not old_session.responses  # its sequence means nothing on the new session
    assert not pending and writer.unanswered == 0


async def test_a_write_takes_at_most_a_batch_and_asks_for_the_next():
    writer, db, pending, _ = writer_parts(config(flush_batch=2))
    pending.outcomes.extend(accepted(i, str(i)) for i in range(5))
    await writer.flush()
    assert len(db.calls[0][1][0]) == 2 and len(pending.outcomes) == 3
    assert pending.wanted.is_set()
    await writer.flush_all()
    assert [len(args[0]) for _, args in db.calls] == [2, 2, 1]


async def test_a_failed_batch_is_written_apart_and_a_refused_result_fails_its_part():
    writer, db, pending, session = writer_parts()
    bad, good = accepted(1, "a"), accepted(2, "b")

    def refuse(outcomes, receipts, *rest):
        if receipts or any(o.part_id == 1 and o.outcome == "submitted" for o in outcomes):
            return DataError("value too long")
        return None

    db.fail[store.record_results] = refuse
    db.fail[store_receipts] = DataError("NUL in a receipt")
    pending.outcomes.extend([bad, good])
    pending.receipts.append((receipt("a"), 5, session))
    await writer.flush()
    written = [args[0] for name, args in db.calls if name == "record_results" and args[0]]
    (failed,) = [o for batch in written for o in batch if o.outcome == "failed"]
    assert failed.part_id == 1 and "cannot be stored" in failed.detail
    assert [good] in written and [bad] in written  # tried alone, then as failed
    assert session.responses == [(5, RECEIVER_PERMANENT)]  # the receipt itself is refused


async def test_deliver_sm_are_stored_apart_when_one_is_bad_and_retried_when_the_store_is_down():
    writer, _, _, _ = writer_parts()
    writer.db = CallingDatabase()  # type: ignore[assignment]
    writes = []

    def write(items, connector):
        writes.append(len(items))
        if "bad" in items:
            raise DataError("NUL")
        return Notifications()

    assert await writer.store_each(["ok", "bad", "ok"], write, Notifications()) == [
        0,
        RECEIVER_PERMANENT,
        0,
    ]
    assert writes == [3, 1, 1, 1]

    def down(items, connector):
        raise OperationalError("connection refused")

    assert await writer.store_each(["ok"] * 2, down, Notifications()) == [RECEIVER_RETRY_LATER] * 2


# --- the link ----------------------------------------------------------------------------------


class RefusingSession(FakeSession):
    def __init__(self, config: SessionConfig, on_response: Any, on_deliver: Any) -> None:
        super().__init__()

    async def open(self) -> None:
        raise BindRefused(0x0E)  # ESME_RINVPASWD


class BindingSession(RefusingSession):
    async def open(self) -> None:
        return None


async def test_the_link_backs_off_and_waits_longest_after_wrong_credentials():
    cfg = config(reconnect_delays=(1, 2, 5))
    db = FakeDatabase()
    link = Link(cfg, "w1", db, AdaptiveRate(None), SubmitRefusals(60))
    assert [link.backoff() for _ in range(4)] == [1, 2, 5, 5]
    link.session_factory = BindingSession  # type: ignore[assignment]
    session = await link.bind(lambda *a: None, lambda *a: None)
    assert link.session is session and link.state == "bound"
    assert link.backoff() == 1  # a bind starts the count again
    link.session_factory = RefusingSession  # type: ignore[assignment]
    assert await link.bind(lambda *a: None, lambda *a: None) is None
    assert link.state == "disconnected" and link.backoff() == 5  # wrong password: slowly
    assert [args[1] for name, args in db.calls if name == "save_link_status"] == [
        "connecting",
        "bound",
        "connecting",
        "disconnected",
    ]


async def test_a_session_that_refuses_everything_is_reported_stalled_and_closed():
    clock = [0.0]
    refusals = SubmitRefusals(10, clock=lambda: clock[0])
    session = FakeSession()
    link = Link(config(), "w1", FakeDatabase(), AdaptiveRate(None), refusals)
    link.session, link.state = session, "bound"  # type: ignore[assignment]
    refusals.refused(ESME_RTHROTTLED)
    clock[0] = 9.0
    refusals.refused(ESME_RTHROTTLED)
    await link.watch_refusals()
    assert link.state == "bound" and not session.closed
    clock[0] = 10.0
    refusals.refused(None)
    await link.watch_refusals()
    assert link.state == "stalled" and session.closed
    assert "no answer" in session.closed[0]


# --- put together ------------------------------------------------------------------------------


def test_the_worker_shares_one_pending_and_one_link_between_its_parts():
    worker = SMPPWorker(replace(config(), receipt_wait=0.5))
    try:
        pending = worker.results.pending
        assert worker.feeder.pending is pending and worker.answers.pending is pending
        assert worker.intake.pending is pending and worker.receipt_wait.pending is pending
        assert worker.answers.link is worker.link is worker.results.link
        assert worker.receipt_wait.wait == 0.5
        assert worker.link_state == "disconnected" and worker.smsc_address == "127.0.0.1:1"
    finally:
        worker.close_database_threads()


async def test_results_a_store_that_is_down_cannot_take_wait_first_in_line():
    writer, db, pending, _ = writer_parts()
    db.fail[store.record_results] = OperationalError("connection refused")
    first, second = accepted(1, "a"), accepted(2, "b")
    pending.outcomes.extend([first, second])
    flush = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0.01)
    pending.outcomes.append(accepted(3, "c"))
    assert pending.outcomes[:2] == [first, second]  # kept, ahead of what came since
    flush.cancel()
    await asyncio.gather(flush, return_exceptions=True)
