"""The message store's batch operations, on SQLite and (with -m store) PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from messaging import store
from messaging.models import (
    ConcatReference,
    Event,
    Message,
    MessagePart,
    Receipt,
    StateTransition,
)
from messaging.states import State
from messaging.store import SubmitOutcome
from messaging.store.backends import Sql
from tests.factories import new_message, receipt

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def submit(message: Message, smsc_ids: list[str]) -> None:
    claimed = store.claim_parts("w1", 100, 60)
    by_message = [c for c in claimed if c.message_id == message.pk]
    store.record_submit_outcomes(
        SubmitOutcome(
            part_id=c.part_id, outcome=SubmitOutcome.SUBMITTED, smsc_id=i, command_status=0
        )
        for c, i in zip(by_message, smsc_ids, strict=True)
    )


def test_create_stores_parts_and_timeline():
    (message,) = store.create_messages([new_message("x" * 400)])
    assert message.parts_count == 3
    parts = list(MessagePart.objects.filter(message=message).order_by("index"))
    assert [p.index for p in parts] == [1, 2, 3]
    assert all(p.state == State.QUEUED and p.esm_class == 0x40 for p in parts)
    # The concatenation reference is the same in every part's UDH.
    assert len({bytes(p.short_message)[3] for p in parts}) == 1
    assert StateTransition.objects.get(message=message).to_state == State.QUEUED


def test_long_messages_to_one_handset_get_different_references():
    first, second = store.create_messages([new_message("x" * 200), new_message("y" * 200)])
    ref = {m.pk: bytes(m.parts.first().short_message)[3] for m in (first, second)}
    assert ref[first.pk] != ref[second.pk]


def _reference(message: Message) -> int:
    return bytes(message.parts.first().short_message)[3]  # 05 00 03 ref total seq


def test_references_rise_per_handset_within_a_batch_and_across_batches():
    long = "x" * 200
    first = store.create_messages(
        [
            new_message(long, dst="5550001"),
            new_message(long, dst="5550002"),
            new_message("short", dst="5550001"),  # one part: no reference taken
            new_message(long, dst="5550001"),
        ]
    )
    second = store.create_messages([new_message(long, dst="5550001")])
    assert [_reference(m) for m in (first[0], first[3], second[0])] == [0, 1, 2]
    assert _reference(first[1]) == 0
    assert first[2].parts_count == 1


def test_references_wrap_around_at_65536():
    ConcatReference.objects.create(dst="5550003", next_value=65535)
    with transaction.atomic(), Sql() as sql:
        assert store.allocate_references(sql, ["5550003"] * 3) == [65535, 0, 1]
    assert ConcatReference.objects.get(dst="5550003").next_value == 2


def test_concurrent_batches_never_share_a_reference():
    start = threading.Barrier(4)
    taken: list[list[int]] = []

    def allocate() -> None:
        try:
            start.wait(10)
            for _ in range(5):
                with transaction.atomic(), Sql() as sql:
                    taken.append(store.allocate_references(sql, ["5550004", "5550005"] * 20))
        finally:
            connection.close()

    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(taken) == 20
    per_handset = sorted(r for refs in taken for r in refs[::2])
    assert per_handset == list(range(400))  # 4 threads x 5 batches x 20, no repeats


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_batch_in_progress_leaves_its_handsets_references_free():
    """Batches to the same handsets do not wait for each other's commit to take
    references: here one is held at its parts (their table locked by another
    transaction) while a second takes a reference for the same handset."""
    table = MessagePart._meta.db_table
    held: list[int] = []

    def send_held_batch() -> None:
        try:
            (message,) = store.create_messages([new_message("x" * 200, dst="5550006")])
            held.append(_reference(message))
        finally:
            connection.close()

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")  # stops inserts of parts
        batch = threading.Thread(target=send_held_batch)
        batch.start()
        waiting = (
            f"SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '{table}'::regclass"
        )
        for _ in range(100):
            cursor.execute(waiting)
            if cursor.fetchone()[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the batch never reached its parts")
        taken: list = []

        def take() -> None:
            try:
                with connection.cursor() as own:
                    own.execute("SET lock_timeout = '2s'")
                taken.extend(store.take_references(["5550006"]))
            except Exception as exc:  # noqa: BLE001 - reported below, in the test's thread
                taken.append(exc)
            finally:
                connection.close()

        second = threading.Thread(target=take)
        second.start()
        second.join(10)
    batch.join(10)
    assert taken == [1]  # no lock timeout: the held batch took 0 and committed it at once
    assert held == [0]


def test_claim_takes_each_part_once():
    store.create_messages([new_message() for _ in range(5)])
    first = store.claim_parts("w1", 3, 60)
    second = store.claim_parts("w2", 10, 60)
    assert len(first) == 3 and len(second) == 2
    assert not {c.part_id for c in first} & {c.part_id for c in second}
    assert store.claim_parts("w3", 10, 60) == []
    assert Message.objects.filter(state=State.SUBMITTING).count() == 5


def test_submit_then_receipt_delivers():
    (message,) = store.create_messages([new_message()])
    submit(message, ["abc123"])
    message.refresh_from_db()
    assert message.state == State.SUBMITTED
    notes = store.store_receipts([receipt("abc123")])
    message.refresh_from_db()
    assert message.state == State.DELIVERED and message.final_at is not None
    assert notes.last_event_id == Event.objects.order_by("-id").first().pk
    assert Event.objects.filter(type="receipt", message=message).count() == 1
    states = list(message.transitions.values_list("to_state", flat=True))
    assert states == ["queued", "submitting", "submitted", "delivered"]


def test_receipt_before_submit_response_is_kept_then_matched():
    (message,) = store.create_messages([new_message()])
    claimed = store.claim_parts("w1", 10, 60)
    store.store_receipts([receipt("77")])
    r = Receipt.objects.get()
    assert r.part is None and r.matched_at is None
    store.record_submit_outcomes(
        [SubmitOutcome(part_id=claimed[0].part_id, outcome="submitted", smsc_id="77")]
    )
    r.refresh_from_db()
    message.refresh_from_db()
    assert r.part_id == claimed[0].part_id and r.matched_at is not None
    assert message.state == State.DELIVERED


def test_receipt_for_unknown_id_is_kept():
    store.store_receipts([receipt("nobody-sent-this")])
    r = Receipt.objects.get()
    assert r.smsc_id == "nobody-sent-this" and r.part is None


def test_receipt_with_decimal_id_matches_hex_submit_id():
    (message,) = store.create_messages([new_message()])
    submit(message, ["3039"])  # hex in submit_sm_resp
    store.store_receipts([receipt("12345")])  # decimal in the receipt
    message.refresh_from_db()
    assert message.state == State.DELIVERED


def test_refusal_fails_message_with_status():
    (message,) = store.create_messages([new_message()])
    (claimed,) = store.claim_parts("w1", 10, 60)
    notes = store.record_submit_outcomes(
        [SubmitOutcome(part_id=claimed.part_id, outcome="failed", command_status=0x0B)]
    )
    message.refresh_from_db()
    assert message.state == State.FAILED and message.command_status == 0x0B
    assert notes.last_event_id is not None


def test_multipart_message_state_comes_from_its_parts():
    (message,) = store.create_messages([new_message("x" * 300)])
    submit(message, ["a1", "a2"])
    store.store_receipts([receipt("a1")])
    message.refresh_from_db()
    assert message.state == State.SUBMITTED  # one part still on its way
    store.store_receipts([receipt("a2", "UNDELIV", 5)])
    message.refresh_from_db()
    assert message.state == State.UNDELIVERABLE


def test_unknown_outcome_requeues_marked():
    (message,) = store.create_messages([new_message()])
    (claimed,) = store.claim_parts("w1", 10, 60)
    store.record_submit_outcomes([SubmitOutcome(part_id=claimed.part_id, outcome="unknown")])
    part = MessagePart.objects.get(pk=claimed.part_id)
    assert part.state == State.QUEUED and part.possibly_duplicated
    message.refresh_from_db()
    assert message.possibly_duplicated


def test_abandoned_parts_are_requeued():
    store.create_messages([new_message()])
    store.claim_parts("dead-worker", 10, -1)  # a lease that has already run out
    assert store.requeue_abandoned() == 1
    assert MessagePart.objects.get().state == State.QUEUED
    assert len(store.claim_parts("w2", 10, 60)) == 1


def test_waiters_are_told_the_smsc_answer():
    accepted, refused, other = store.create_messages(
        [new_message(notify_channel="chan!1"), new_message(notify_channel="chan!1"), new_message()]
    )
    claimed = {p.message_id: p.part_id for p in store.claim_parts("w1", 10, 60)}
    notes = store.record_submit_outcomes(
        [
            SubmitOutcome(part_id=claimed[accepted.pk], outcome="submitted", smsc_id="9"),
            SubmitOutcome(part_id=claimed[refused.pk], outcome="failed", command_status=0x0B),
            SubmitOutcome(part_id=claimed[other.pk], outcome="submitted", smsc_id="a"),
        ]
    )
    # What the waiting request answers from: state, command_status, SMSC ids.
    assert notes.waiters == {
        "chan!1": [
            (accepted.pk, State.SUBMITTED, None, ["9"]),
            (refused.pk, State.FAILED, 0x0B, [None]),
        ]
    }


def test_waiters_are_told_when_the_validity_ran_out():
    (message,) = store.create_messages([new_message(text="hi " * 100, notify_channel="chan!1")])
    Message.objects.filter(pk=message.pk).update(validity_until=timezone.now() - timedelta(1))
    notes = store.expire_overdue()
    assert message.parts_count == 2
    assert notes.waiters == {"chan!1": [(message.pk, State.EXPIRED, None, [None, None])]}
