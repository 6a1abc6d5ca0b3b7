"""SMSC ids are unique only per SMSC (issue 24): each connector's worker claims its own
messages, a receipt is matched among the parts its own SMSC took, even when two SMSCs
give the same id, an incoming message is put together from one SMSC's parts, and
query_sm goes to the SMSC that gave the id."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone

from messaging import store
from messaging.models import IncomingFragment, IncomingMessage, Message, MessagePart, Receipt
from messaging.notify import ask_smsc, query_channel
from messaging.states import State
from messaging.store import FragmentIn, HandOver
from tests.factories import new_message, receipt
from tests.test_store_batches import submitted

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def _queued(*connectors: str) -> dict[str, int]:
    messages = store.create_messages(
        [new_message(f"to {c or 'default'}", register="final", connector=c) for c in connectors]
    )
    return {c: m.pk for c, m in zip(connectors, messages, strict=True)}


def _claimed(connector: str) -> store.ClaimedPart:
    (part,) = store.claim_parts(f"worker-{connector}", 10, 60, connector)
    return part


def test_each_connector_claims_its_own_messages_only():
    ids = _queued("a", "b", "")
    for connector in ("b", "", "a"):
        (part,) = store.claim_parts("w", 10, 60, connector)
        assert part.message_id == ids[connector]
    assert store.claim_parts("w", 10, 60, "a") == []
    assert Message.objects.get(pk=ids["a"]).connector == "a"


def test_the_same_smsc_id_from_two_connectors_matches_each_its_own_part():
    ids = _queued("a", "b")
    part_a, part_b = _claimed("a"), _claimed("b")
    store.record_results([submitted(part_a, "100")], (), connector="a")
    store.record_results([submitted(part_b, "100")], (), connector="b")
    assert dict(MessagePart.objects.values_list("message_id", "connector")) == {
        ids["a"]: "a",
        ids["b"]: "b",
    }

    store.store_receipts([receipt("100", stat="UNDELIV", state=5)], connector="b")
    states = dict(Message.objects.values_list("pk", "state"))
    assert states == {ids["a"]: State.SUBMITTED, ids["b"]: State.UNDELIVERABLE}

    store.store_receipts([receipt("100")], connector="a")
    states = dict(Message.objects.values_list("pk", "state"))
    assert states == {ids["a"]: State.DELIVERED, ids["b"]: State.UNDELIVERABLE}
    assert set(Receipt.objects.values_list("connector", "message_id", "stat")) == {
        ("b", ids["b"], "UNDELIV"),
        ("a", ids["a"], "DELIVRD"),
    }


def test_a_receipt_that_overtook_its_response_waits_for_its_own_connectors_part():
    ids = _queued("a", "b")
    part_a, part_b = _claimed("a"), _claimed("b")
    store.store_receipts([receipt("200")], connector="a")  # before a's submit_sm_resp
    assert Receipt.objects.get().message_id is None

    store.record_results([submitted(part_b, "200")], (), connector="b")  # b's own "200"
    assert Receipt.objects.get().message_id is None  # not b's receipt
    assert Message.objects.get(pk=ids["b"]).state == State.SUBMITTED

    store.record_results([submitted(part_a, "200")], (), connector="a")
    assert Receipt.objects.get().message_id == ids["a"]
    assert Message.objects.get(pk=ids["a"]).state == State.DELIVERED


def test_only_messages_for_the_workers_connector_are_handed_to_it():
    batch = [new_message("for a", connector="a"), new_message("default")]
    messages, handed = store.create_handed_over(batch, HandOver("w", 60, room=10, connector=""))
    assert [p.message_id for p in handed] == [messages[1].pk]
    assert Message.objects.get(pk=messages[0].pk).state == State.QUEUED
    assert _claimed("a").message_id == messages[0].pk


def _fragment(seq: int, text: bytes) -> FragmentIn:
    return FragmentIn(
        src="4915550001", dst="bart", data_coding=0, payload=text, reference=9, total=2, seq=seq
    )


def test_incoming_parts_are_put_together_only_with_parts_from_the_same_smsc():
    store.store_fragments([_fragment(1, b"hello ")], connector="a")
    store.store_fragments([_fragment(2, b"world")], connector="b")  # same reference, other SMSC
    assert not IncomingMessage.objects.exists()
    store.store_fragments([_fragment(2, b"there")], connector="a")
    (incoming,) = IncomingMessage.objects.all()
    assert (incoming.text, incoming.connector, incoming.complete) == ("hello there", "a", True)
    # b's half, once stale, is delivered as what it is: b's, incomplete.
    IncomingFragment.objects.filter(incoming__isnull=True).update(
        received_at=timezone.now() - timedelta(minutes=5)
    )
    store.assemble_stale_fragments(older_than=60)
    stale = IncomingMessage.objects.get(connector="b")
    assert (stale.text, stale.complete) == ("world", False)


async def test_a_query_goes_to_the_workers_of_the_connector_that_took_the_part():
    layer = get_channel_layer()
    asked: list[tuple[str, str]] = []

    async def worker_of(connector: str) -> None:
        request = await layer.receive(query_channel(connector))
        asked.append((connector, request["message_id"]))
        await layer.send(request["reply_channel"], {"type": "query.result", "by": connector})

    workers = [asyncio.ensure_future(worker_of(c)) for c in ("", "b")]
    try:
        assert await ask_smsc({"message_id": "100"}, 5, connector="b") == {
            "type": "query.result",
            "by": "b",
        }
        assert await ask_smsc({"message_id": "7"}, 5) == {"type": "query.result", "by": ""}
        assert await ask_smsc({"message_id": "8"}, 0.2, connector="c") is None  # none bound
        assert asked == [("b", "100"), ("", "7")]
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
