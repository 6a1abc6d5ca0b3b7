"""Long and non-GSM texts over real SMPP to the simulator, and long incoming messages."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from messaging.models import IncomingMessage, LinkStatus, Message, Receipt
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from sms.splitting import parse_udh
from tests.conftest import wait_until

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def bound():
    return LinkStatus.objects.filter(state="bound").exists()


def test_400_gsm_characters_go_as_3_udh_parts_and_are_delivered(simulator, start_worker):
    start_worker(simulator.port)
    wait_until(bound)
    text = ("Hello {world} " * 40)[:400]  # braces are GSM escapes: 2 septets each
    body = APIClient().post("/v1/send", {"dst": "lisa", "text": text}).json()
    assert body["parts"] == 3 and body["encoding"] == "gsm7"
    records = simulator.submits()
    assert len(records) == 3 and len(set(body["message_ids"])) == 3
    infos = []
    payload = b""
    for record in records:
        assert record.esm_class & 0x40 and record.data_coding == 0
        info, user_data = parse_udh(record.short_message)
        infos.append(info)
        payload += user_data
        assert len(user_data) <= 153
    assert [(i.total, i.seq) for i in infos] == [(3, 1), (3, 2), (3, 3)]
    assert len({i.reference for i in infos}) == 1
    assert payload.replace(b"\x1b(", b"{").replace(b"\x1b)", b"}").decode("ascii") == text
    wait_until(lambda: Message.objects.get(pk=body["id"]).state == "delivered")
    # One receipt per part, each matched to its own part.
    assert sorted(Receipt.objects.values_list("part__index", flat=True)) == [1, 2, 3]


def test_emoji_text_goes_as_ucs2_parts(simulator, start_worker):
    start_worker(simulator.port)
    wait_until(bound)
    text = "Party time 🎉 " * 8  # 14 UTF-16 units each (the emoji is a surrogate pair)
    body = APIClient().post("/v1/send", {"dst": "lisa", "text": text}).json()
    assert body["encoding"] == "ucs2" and body["ucs2_forced_by"] == ["🎉"] and body["parts"] == 2
    records = simulator.submits()
    assert all(r.data_coding == 8 for r in records)
    joined = b"".join(parse_udh(r.short_message)[1] for r in records)
    assert joined.decode("utf-16-be") == text
    wait_until(lambda: Message.objects.get(pk=body["id"]).state == "delivered")


@pytest.mark.parametrize("concat", ["sar", "payload", "udh16"])
def test_other_concatenation_methods(start_worker, concat):
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.01)) as smsc:
        start_worker(smsc.port, SMPP_CONCAT=concat)
        wait_until(bound)
        text = "x" * 200
        from django.test import override_settings

        with override_settings(SMPP_CONCAT=concat):
            body = APIClient().post("/v1/send", {"dst": "lisa", "text": text}).json()
        records = smsc.submits()
        if concat == "sar":
            assert [(r.sar_total_segments, r.sar_segment_seqnum) for r in records] == [
                (2, 1),
                (2, 2),
            ]
            assert b"".join(r.short_message for r in records) == text.encode()
        elif concat == "payload":
            (record,) = records
            assert record.message_payload == text.encode() and not record.short_message
        else:
            assert records[0].short_message[:3] == b"\x06\x08\x04"
        wait_until(lambda: Message.objects.get(pk=body["id"]).state == "delivered")


def test_ucs2_and_sar_incoming_long_messages_are_reassembled(simulator, start_worker):
    start_worker(simulator.port)
    wait_until(bound)
    ucs2_text = "Grüße aus Köln ✓ 🎉 " * 6
    simulator.inject_mo("homer", "bart", ucs2_text, encoding="ucs2", split="udh", out_of_order=True)
    simulator.inject_mo("marge", "bart", "Just plain text. " * 15, split="sar", out_of_order=True)
    wait_until(lambda: IncomingMessage.objects.count() == 2)
    texts = dict(IncomingMessage.objects.values_list("src", "text"))
    assert texts["homer"] == ucs2_text
    assert texts["marge"] == "Just plain text. " * 15
    assert all(IncomingMessage.objects.values_list("complete", flat=True))


def test_incomplete_incoming_message_is_delivered_after_the_timeout(start_worker):
    from messaging.store import FragmentIn, assemble_stale_fragments, store_fragments

    store_fragments(
        [
            FragmentIn(
                src="moe",
                dst="bart",
                data_coding=0,
                payload=b"first half ",
                reference=7,
                total=2,
                seq=1,
            )
        ]
    )
    assert IncomingMessage.objects.count() == 0
    assemble_stale_fragments(older_than=0)
    incoming = IncomingMessage.objects.get()
    assert incoming.text == "first half " and not incoming.complete
    assert (incoming.parts_received, incoming.parts_expected) == (1, 2)
