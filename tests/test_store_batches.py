"""The store's batch paths (raw SQL) keep the rules of the one-at-a-time ones."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from messaging import store
from messaging.models import Event, Message, MessagePart, Receipt, StateTransition
from messaging.states import State
from messaging.store import SubmitOutcome
from messaging.store.backends import Sql
from tests.factories import new_message, receipt

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def submitted(claimed, smsc_id: str) -> SubmitOutcome:
    return SubmitOutcome(
        part_id=claimed.part_id,
        message_id=claimed.message_id,
        outcome=SubmitOutcome.SUBMITTED,
        command_status=0,
        smsc_id=smsc_id,
        sequence=7,
        bind_id="b1",
    )


def test_a_batch_stores_each_message_with_its_own_parts_in_order():
    texts = [f"message {n}" for n in range(50)] + ["x" * 300]
    batch = [new_message(text, dst=f"555{n:04d}") for n, text in enumerate(texts)]
    messages = store.create_messages(batch)
    assert [m.pk for m in messages] == sorted(m.pk for m in messages)
    for message, text in zip(messages, texts, strict=True):
        stored = Message.objects.get(pk=message.pk)
        assert stored.text == text and stored.state == State.QUEUED
        parts = list(stored.parts.order_by("index"))
        assert len(parts) == stored.parts_count == message.parts_count
        if len(parts) == 1:
            assert bytes(parts[0].short_message) == text.encode()
    assert StateTransition.objects.filter(to_state=State.QUEUED).count() == len(texts)


def test_the_messages_returned_are_the_rows_stored():
    """create_messages builds its instances itself (positionally, as Django does for
    rows it reads): each must equal, field for field, what a query reads back."""
    batch = [
        new_message("plain", dst="5550001"),
        new_message("é" * 80, dst="5550002", reference="r-2", priority=2),
        new_message("x" * 300, dst="5550003", notify_channel="chan!1"),
    ]
    returned = store.create_messages(batch)
    for message in returned:
        stored = Message.objects.get(pk=message.pk)
        fields = [f.attname for f in Message._meta.concrete_fields]
        assert {f: getattr(message, f) for f in fields} == {f: getattr(stored, f) for f in fields}
        assert not message._state.adding and message._state.db == "default"


def test_result_and_receipt_in_one_batch_leave_the_same_record_as_two():
    (message,) = store.create_messages([new_message("hi")])
    (claimed,) = store.claim_parts("w1", 10, 60)
    notes = store.record_results([submitted(claimed, "ab12")], [receipt("ab12")])
    message.refresh_from_db()
    assert message.state == State.DELIVERED and message.submitted_at and message.final_at
    assert list(message.transitions.values_list("from_state", "to_state")) == [
        ("", State.QUEUED),
        (State.QUEUED, State.SUBMITTING),
        (State.SUBMITTING, State.SUBMITTED),
        (State.SUBMITTED, State.DELIVERED),
    ]
    events = list(Event.objects.filter(message=message).values_list("type", "payload"))
    assert [(t, p["state"]) for t, p in events] == [
        ("status", State.SUBMITTED),
        ("receipt", "DELIVRD"),
        ("status", State.DELIVERED),
    ]
    assert notes.last_event_id == Event.objects.order_by("-id").first().pk
    part = MessagePart.objects.get(pk=claimed.part_id)
    assert (part.smsc_id, part.sequence_number, part.bind_id) == ("ab12", 7, "b1")
    stored = Receipt.objects.get()
    assert stored.part_id == part.pk and stored.matched_at and stored.tlvs == {"message_state": 2}


def test_a_receipt_kept_unmatched_is_matched_when_its_result_comes():
    (message,) = store.create_messages([new_message("hi")])
    (claimed,) = store.claim_parts("w1", 10, 60)
    store.record_results([], [receipt("cafe01")])  # before the submit_sm_resp was written
    assert Receipt.objects.get().matched_at is None
    store.record_results([submitted(claimed, "cafe01")], [])
    message.refresh_from_db()
    assert message.state == State.DELIVERED
    assert Receipt.objects.get().part_id == claimed.part_id


def test_a_part_claimed_but_never_sent_goes_back_as_it_was():
    (message,) = store.create_messages([new_message("hi")])
    (claimed,) = store.claim_parts("w1", 10, 60)
    assert claimed.attempts == 1
    store.record_results([SubmitOutcome(part_id=claimed.part_id, outcome=SubmitOutcome.UNSENT)], [])
    part = MessagePart.objects.get(pk=claimed.part_id)
    assert part.state == State.QUEUED and part.attempts == 0 and not part.possibly_duplicated
    message.refresh_from_db()
    assert message.state == State.QUEUED and not message.possibly_duplicated
    (again,) = store.claim_parts("w2", 10, 60)
    assert again.part_id == claimed.part_id and again.attempts == 1


def test_claims_take_the_oldest_due_parts_and_tell_who_waits():
    early = store.create_messages([new_message("first", notify_channel="chan!1")])
    store.create_messages([new_message("second")])
    claimed = store.claim_parts("w1", 1, 60)
    assert [c.message_id for c in claimed] == [early[0].pk]
    assert claimed[0].waited and claimed[0].src == "bart" and claimed[0].register == ""
    (later,) = store.claim_parts("w1", 5, 60)
    assert not later.waited


def test_a_statement_refused_in_the_write_pipeline_fails_the_whole_batch_as_a_django_error():
    """The batch's writes travel together (``Sql.pipeline``): one refused statement
    must still raise Django's error and leave nothing of the batch behind."""
    stored = store.create_messages([new_message()])[0]
    before = StateTransition.objects.count()
    with pytest.raises(IntegrityError), transaction.atomic(), Sql() as sql, sql.pipeline():
        written = {"message_id": stored.pk, "to_state": State.QUEUED, "at": timezone.now()}
        sql.insert(StateTransition, [written])  # valid: must be rolled back with the batch
        sql.insert(StateTransition, [{"message_id": stored.pk, "to_state": None}])  # NOT NULL
    assert StateTransition.objects.count() == before


def test_datetimes_are_written_as_django_writes_them():
    """SQLite keeps datetimes as text: the store's own conversion must give Django's."""
    from datetime import UTC, datetime, timedelta
    from datetime import timezone as fixed_offset

    from django.db import connection

    now = timezone.now()
    values = [
        now,
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # whole seconds: no fraction written
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=fixed_offset(timedelta(hours=-3))),
        None,
        # the same object again and again (remembered), then another after it
        now,
        now,
        now + timedelta(microseconds=1),
        now,
    ]
    with Sql() as sql:
        written = [sql.dt(value) for value in values]
    if sql.postgres:
        assert all(w is v for w, v in zip(written, values, strict=True))  # psycopg's to adapt
    else:
        assert written == [connection.ops.adapt_datetimefield_value(v) for v in values]
        assert written[2] == "2026-01-02 06:04:05.000006"
