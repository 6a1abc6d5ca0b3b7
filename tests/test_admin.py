"""The admin message log: lists, filters, search, the message page and the operator actions."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import store
from messaging.admin.base import EstimatedCountPaginator
from messaging.models import (
    Event,
    IncomingMessage,
    LinkStatus,
    Message,
    MessagePart,
    StateTransition,
)
from messaging.outbound import split_for_smsc
from messaging.states import State
from messaging.store import NewMessage, SubmitOutcome
from tests.factories import receipt

pytestmark = [pytest.mark.store, pytest.mark.django_db]

LIST = "/admin/messaging/message/"


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "x")
    client.force_login(user)
    return client


def queued(dst: str = "lisa", text: str = "hi") -> Message:
    (message,) = store.create_messages(
        [NewMessage(dst=dst, text=text, split=split_for_smsc(text, "auto"), src="bart")]
    )
    return message


def answered(dst: str, smsc_id: str = "", failed_with: int | None = None) -> Message:
    """A message the SMSC accepted (with ``smsc_id``) or refused (with ``failed_with``).

    Created and answered at once, so no other message is in the queue meanwhile.
    """
    message = queued(dst)
    claimed = store.claim_parts("w1", 100, 60)
    assert {c.message_id for c in claimed} == {message.pk}
    store.record_submit_outcomes(
        SubmitOutcome(
            part_id=c.part_id,
            outcome=SubmitOutcome.FAILED if failed_with else SubmitOutcome.SUBMITTED,
            command_status=failed_with or 0,
            smsc_id="" if failed_with else smsc_id,
        )
        for c in claimed
    )
    message.refresh_from_db()
    return message


def test_list_shows_destination_and_smsc_id(operator):
    answered("5551234", smsc_id="ab12cd")
    html = operator.get(LIST).content.decode()
    assert "5551234" in html
    assert "<code>ab12cd</code>" in html
    assert "submitted" in html


def test_state_and_command_status_filters_narrow_the_list(operator):
    answered("5550001", smsc_id="ok1")
    answered("5550002", failed_with=0x0B)
    html = operator.get(LIST).content.decode()
    assert "5550001" in html and "5550002" in html
    # The command status filter lists the codes failed messages ended with, by name.
    assert "0x0B ESME_RINVDSTADR" in html

    failed = operator.get(LIST, {"state": "failed"}).content.decode()
    assert "5550002" in failed and "5550001" not in failed

    by_status = operator.get(LIST, {"command_status": "11"}).content.decode()
    assert "5550002" in by_status and "5550001" not in by_status
    none = operator.get(LIST, {"command_status": "88"}).content.decode()
    assert "5550002" not in none and "5550001" not in none


def test_search_finds_a_message_by_its_smsc_id(operator):
    answered("5550001", smsc_id="00ff12")
    answered("5550002", smsc_id="77aa34")
    # As stored, or in upper case as an SMSC may quote it.
    for term in ("00ff12", "00FF12"):
        html = operator.get(LIST, {"q": term}).content.decode()
        assert "5550001" in html, term
        assert "5550002" not in html, term
    by_dst = operator.get(LIST, {"q": "5550002"}).content.decode()
    assert "5550002" in by_dst and "5550001" not in by_dst


def test_search_falls_back_to_the_text_when_nothing_matches_exactly(operator):
    code = queued("5550001", text="your code is 4711")
    other = queued("5550002", text="see you at 5550001")
    # An exact destination wins over text that happens to contain it...
    by_dst = operator.get(LIST, {"q": "5550001"}).content.decode()
    assert str(code) in by_dst and str(other) not in by_dst
    # ...and text is searched only when nothing matches exactly.
    by_text = operator.get(LIST, {"q": "code is 47"}).content.decode()
    assert str(code) in by_text and str(other) not in by_text


def test_message_page_shows_parts_receipts_and_timeline(operator):
    message = answered("5550001", smsc_id="feed01")
    store.store_receipts([receipt("feed01")])
    response = operator.get(f"{LIST}{message.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    # The part, with its SMSC id and the exact octets sent.
    assert "feed01" in html
    assert bytes(MessagePart.objects.get(message=message).short_message).hex(" ") in html
    # The receipt.
    assert "id:feed01 stat:DELIVRD" in html
    # The timeline, in order.
    timeline = list(
        StateTransition.objects.filter(message=message).values_list("to_state", flat=True)
    )
    assert timeline == ["queued", "submitting", "submitted", "delivered"]
    assert "stored" in html  # the first transition's detail
    # Read-only: nothing to save or delete.
    assert 'name="_save"' not in html
    assert "deletelink" not in html


def test_resend_moves_a_failed_message_back_to_the_queue(operator):
    message = answered("5550001", failed_with=0x0B)
    assert message.state == State.FAILED
    events_before = Event.objects.count()
    response = operator.post(
        LIST,
        {"action": "resend_failed_messages", "_selected_action": [message.pk], "index": 0},
    )
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.state == State.QUEUED
    assert message.command_status is None and message.final_at is None
    part = MessagePart.objects.get(message=message)
    assert part.state == State.QUEUED
    assert part.attempts == 1  # unchanged: it was tried once
    last = StateTransition.objects.filter(message=message).last()
    assert (last.from_state, last.to_state, last.detail) == (
        "failed",
        "queued",
        "resent by operator",
    )
    assert Event.objects.count() == events_before + 1
    # The worker can take it again.
    assert [c.message_id for c in store.claim_parts("w2", 10, 60)] == [message.pk]


def test_resend_sends_again_only_the_parts_that_failed(operator):
    message = queued("5550001", text="x" * 200)  # two parts
    first, second = sorted(store.claim_parts("w1", 10, 60), key=lambda c: c.index)
    store.record_submit_outcomes(
        [
            SubmitOutcome(first.part_id, SubmitOutcome.SUBMITTED, command_status=0, smsc_id="p1"),
            SubmitOutcome(second.part_id, SubmitOutcome.FAILED, command_status=0x0B),
        ]
    )
    store.store_receipts([receipt("p1")])
    message.refresh_from_db()
    assert message.state == State.FAILED
    operator.post(
        LIST, {"action": "resend_failed_messages", "_selected_action": [message.pk], "index": 0}
    )
    message.refresh_from_db()
    assert message.state == State.QUEUED
    states = dict(MessagePart.objects.filter(message=message).values_list("index", "state"))
    assert states == {1: State.DELIVERED, 2: State.QUEUED}
    assert [c.part_id for c in store.claim_parts("w2", 10, 60)] == [second.part_id]


def test_resend_leaves_messages_that_did_not_fail(operator):
    message = answered("5550001", smsc_id="aa01")
    operator.post(
        LIST, {"action": "resend_failed_messages", "_selected_action": [message.pk], "index": 0}
    )
    message.refresh_from_db()
    assert message.state == State.SUBMITTED
    assert not StateTransition.objects.filter(message=message, detail__startswith="resent")


def test_cancel_fails_a_queued_message(operator):
    message = queued("5550003")
    response = operator.post(
        LIST,
        {"action": "cancel_queued_messages", "_selected_action": [message.pk], "index": 0},
    )
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.state == State.FAILED
    assert message.command_status is None and message.final_at is not None
    assert MessagePart.objects.get(message=message).state == State.FAILED
    last = StateTransition.objects.filter(message=message).last()
    assert (last.from_state, last.to_state, last.detail) == (
        "queued",
        "failed",
        "cancelled by operator",
    )
    # Nothing left for the worker.
    assert store.claim_parts("w2", 10, 60) == []


def test_nothing_can_be_added_changed_or_deleted(operator):
    message = answered("5550001", smsc_id="aa01")
    store.store_receipts([receipt("aa01")])
    html = operator.get(LIST).content.decode()
    assert f'href="{LIST}add/"' not in html
    assert "delete_selected" not in html
    page = operator.get(f"{LIST}{message.pk}/change/").content.decode()
    assert "deletelink" not in page and 'name="_save"' not in page
    for model in ("message", "receipt", "incomingmessage", "linkstatus", "event"):
        assert operator.get(f"/admin/messaging/{model}/add/").status_code == 403, model
        listing = operator.get(f"/admin/messaging/{model}/").content.decode()
        assert f'href="/admin/messaging/{model}/add/"' not in listing, model
    assert operator.post(f"{LIST}{message.pk}/delete/").status_code == 403
    assert Message.objects.filter(pk=message.pk).exists()


def _list_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST)
    assert response.status_code == 200
    return len(queries)


def test_list_queries_do_not_grow_with_the_page(operator):
    for i in range(5):
        answered(f"555{i:04d}", smsc_id=f"id{i}")
    few = _list_queries(operator)
    for i in range(5, 30):
        answered(f"555{i:04d}", smsc_id=f"id{i}")
    many = _list_queries(operator)
    assert many == few
    assert few <= 15


def test_receipt_list_filters_matched_and_unmatched(operator):
    answered("5550001", smsc_id="bb01")
    store.store_receipts([receipt("bb01"), receipt("no-such-id")])
    matched = operator.get("/admin/messaging/receipt/", {"matched": "yes"}).content.decode()
    unmatched = operator.get("/admin/messaging/receipt/", {"matched": "no"}).content.decode()
    assert "bb01" in matched and "no-such-id" not in matched
    assert "no-such-id" in unmatched and "bb01" not in unmatched


def test_incoming_and_link_lists_render(operator):
    store.store_fragments(
        [store.FragmentIn(src="5559999", dst="bart", data_coding=0, payload=b"hello")]
    )
    assert IncomingMessage.objects.count() == 1
    now = timezone.now()
    LinkStatus.objects.create(
        worker_id="host-1-abc", state="bound", smsc="smsc:2775", changed_at=now, heartbeat_at=now
    )
    assert "5559999" in operator.get("/admin/messaging/incomingmessage/").content.decode()
    links = operator.get("/admin/messaging/linkstatus/").content.decode()
    assert "host-1-abc" in links and "bound" in links


def test_paginator_counts_exactly_below_the_threshold():
    for i in range(3):
        queued(f"555{i:04d}")
    paginator = EstimatedCountPaginator(Message.objects.order_by("-id"), 100)
    assert paginator.count == 3


def test_paginator_uses_the_planner_estimate_for_a_big_unfiltered_table():
    if connection.vendor != "postgresql":
        pytest.skip("the estimate is PostgreSQL's pg_class.reltuples")
    queued("5550001")
    with connection.cursor() as cursor:  # what autovacuum would have recorded
        cursor.execute(
            "UPDATE pg_class SET reltuples = 1234567 WHERE oid = 'messaging_message'::regclass"
        )
    unfiltered = EstimatedCountPaginator(Message.objects.order_by("-id"), 100)
    assert unfiltered.count == 1234567
    assert unfiltered.num_pages == 12346
    filtered = EstimatedCountPaginator(Message.objects.filter(dst="5550001"), 100)
    assert filtered.count == 1


def test_odd_search_and_filter_input_is_not_a_server_error(operator):
    answered("5550001", smsc_id="aa01")
    for term in ("¹", "a\x00b", "9" * 30, "%", "'"):
        assert operator.get(LIST, {"q": term}).status_code == 200, repr(term)
    html = operator.get(LIST, {"command_status": "¹"}).content.decode()
    assert "5550001" not in html
