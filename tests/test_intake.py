"""The request path's parts: group commit (``MessageIntake``), the waiting room for
the SMSC's answer (``SmscAnswers``) and the lean API handler, in process."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import HttpCommunicator
from django.core.signals import request_finished, request_started
from django.db import IntegrityError, connection

from messaging.api import intake as intake_module
from messaging.api.intake import MessageIntake
from messaging.api.smsc_answers import POLL_INTERVAL, SmscAnswers
from messaging.models import Message, MessagePart
from messaging.states import State
from smsapi.asgi import application
from tests.factories import new_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every batch the intake writes (create_messages, called through)."""
    sizes: list[int] = []
    create = intake_module.create_messages

    def counting(new_messages):
        sizes.append(len(new_messages))
        return create(new_messages)

    monkeypatch.setattr(intake_module, "create_messages", counting)
    return sizes


async def test_concurrent_requests_share_a_transaction(batches):
    intake = MessageIntake()
    texts = [f"hello {n}" for n in range(40)]
    stored = await asyncio.gather(*(intake.store(new_message(t)) for t in texts))
    assert [m.text for m in stored] == texts
    assert len({m.pk for m in stored}) == 40
    assert sum(batches) == 40
    assert len(batches) < 40  # those that came while one batch was written went together
    assert await database_sync_to_async(Message.objects.count)() == 40
    parts = await database_sync_to_async(MessagePart.objects.filter(state=State.QUEUED).count)()
    assert parts == 40


async def test_one_bad_message_fails_alone(batches):
    intake = MessageIntake()
    first = new_message("first", idempotency_key="k1")
    twin = new_message("twin", idempotency_key="k1")  # the same key: refused by the store
    other = new_message("other")
    results = await asyncio.gather(
        intake.store(first), intake.store(twin), intake.store(other), return_exceptions=True
    )
    assert results[0].text == "first"
    assert isinstance(results[1], IntegrityError)
    assert results[2].text == "other"
    texts = await database_sync_to_async(
        lambda: sorted(Message.objects.values_list("text", flat=True))
    )()
    assert texts == ["first", "other"]
    assert batches[0] == 3  # tried together first, then one by one


def _stored_waiting(channel: str) -> Message:
    from messaging.store import create_messages

    (message,) = create_messages([new_message(notify_channel=channel)])
    return message


def _answer(message_id: int) -> None:
    MessagePart.objects.filter(message_id=message_id).update(
        state=State.SUBMITTED, smsc_id="ab12", attempts=1
    )


async def test_a_bell_ends_the_wait_with_its_answer_and_no_read_back():
    answers = SmscAnswers()
    channel = await answers.prepare()
    message = await database_sync_to_async(_stored_waiting)(channel)
    waiting = asyncio.ensure_future(answers.wait(message.pk, timeout=10))
    await asyncio.sleep(0.05)
    # The store still says queued: the answer can only come from the bell.
    answer = [message.pk, State.SUBMITTED, None, ["ab12"]]
    await get_channel_layer().send(channel, {"type": "message.answered", "answers": [answer]})
    assert list(await waiting) == answer


async def test_a_lost_bell_costs_only_time():
    answers = SmscAnswers()
    channel = await answers.prepare()
    message = await database_sync_to_async(_stored_waiting)(channel)
    waiting = asyncio.ensure_future(answers.wait(message.pk, timeout=10))
    await database_sync_to_async(_answer)(message.pk)  # and no bell
    assert await waiting == (message.pk, State.QUEUED, None, ["ab12"])  # read from the store


async def test_a_lost_bell_is_found_while_other_bells_keep_ringing():
    answers = SmscAnswers()
    channel = await answers.prepare()
    message = await database_sync_to_async(_stored_waiting)(channel)
    waiting = asyncio.ensure_future(answers.wait(message.pk, timeout=10))
    await database_sync_to_async(_answer)(message.pk)  # its own bell is lost
    started = time.monotonic()
    layer = get_channel_layer()
    while not waiting.done() and time.monotonic() - started < 5:
        # Bells for other messages, more often than the poll interval.
        other = [-1, State.SUBMITTED, None, ["x"]]
        await layer.send(channel, {"type": "message.answered", "answers": [other]})
        await asyncio.sleep(POLL_INTERVAL / 5)
    assert waiting.done() and (await waiting)[0] == message.pk
    assert time.monotonic() - started < 3 * POLL_INTERVAL


async def test_a_bell_before_the_wait_is_not_missed():
    answers = SmscAnswers()
    channel = await answers.prepare()
    other = await database_sync_to_async(_stored_waiting)(channel)
    early = await database_sync_to_async(_stored_waiting)(channel)
    # Someone else waits, so the listener runs and hears the bell for ``early``.
    other_wait = asyncio.ensure_future(answers.wait(other.pk, timeout=3))
    await asyncio.sleep(0.05)
    answer = [early.pk, State.SUBMITTED, None, ["ab12"]]
    await get_channel_layer().send(channel, {"type": "message.answered", "answers": [answer]})
    await asyncio.sleep(0.2)
    started = time.monotonic()
    assert list(await answers.wait(early.pk, timeout=10)) == answer
    assert time.monotonic() - started < POLL_INTERVAL  # the bell's answer, kept
    other_wait.cancel()


async def test_no_answer_is_none_after_the_timeout():
    answers = SmscAnswers()
    channel = await answers.prepare()
    message = await database_sync_to_async(_stored_waiting)(channel)
    assert await answers.wait(message.pk, timeout=0.3) is None


async def test_the_api_and_the_pages_get_their_own_middleware():
    api = HttpCommunicator(
        application,
        "POST",
        "/v1/send",
        body=b"dst=5550001&text=hi&wait=0",
        headers=[
            (b"host", b"localhost"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"26"),
        ],
    )
    response = await api.get_response(timeout=10)
    headers = dict(response["headers"])
    assert response["status"] == 202
    assert headers[b"X-Content-Type-Options"] == b"nosniff"
    assert b"X-Frame-Options" not in headers  # no pages middleware on the API
    page = HttpCommunicator(application, "GET", "/admin/login/", headers=[(b"host", b"localhost")])
    response = await page.get_response(timeout=10)
    assert response["status"] == 200
    assert dict(response["headers"])[b"X-Frame-Options"] == b"DENY"


async def test_api_requests_skip_the_request_signals_hop_but_still_finish(monkeypatch):
    """The API handler sends no request_started (its receivers only tend the sync
    thread's connection, which the API does not use); request_finished still comes."""
    sent: list[str] = []

    def started(**kwargs):
        sent.append("started")

    def finished(**kwargs):
        sent.append("finished")

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        api = HttpCommunicator(
            application, "GET", "/v1/messages", headers=[(b"host", b"localhost")]
        )
        assert (await api.get_response(timeout=10))["status"] == 200
        await api.wait(timeout=10)  # the handler closes the response after sending it
        assert sent == ["finished"]
        sent.clear()
        page = HttpCommunicator(
            application, "GET", "/admin/login/", headers=[(b"host", b"localhost")]
        )
        assert (await page.get_response(timeout=10))["status"] == 200
        await page.wait(timeout=10)
        assert sent == ["started", "finished"]  # the pages keep Django's handler
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)


async def test_a_sync_api_view_closes_its_own_connection():
    """Without the request signals, a sync view (/metrics) must not leave its
    connection open on Django's sync thread."""
    response = await HttpCommunicator(
        application, "GET", "/metrics", headers=[(b"host", b"localhost")]
    ).get_response(timeout=10)
    assert response["status"] == 200
    assert b"smsapi_store_up 1.0" in response["body"]
    assert await sync_to_async(lambda: connection.connection is None)()
