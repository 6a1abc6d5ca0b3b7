"""Webhooks: a real HTTP receiver on 127.0.0.1 checks the signature the way
docs/webhooks.md tells clients to, and records what it got.

The sender runs on an event loop of its own in a thread (``running_sender``),
or as ``manage.py webhook_sender`` in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from messaging.events import event_data, last_event_id
from messaging.models import (
    ApiKey,
    Event,
    LinkStatus,
    Message,
    WebhookCursor,
    WebhookDelivery,
)
from messaging.store.backends import Sql
from messaging.webhooks.delivery import SenderConfig, WebhookSender
from messaging.webhooks.planning import Planner, plan_deliveries
from tests.conftest import ROOT, free_port, wait_until
from tests.live import add_events, database_url, make_message

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]

# The receivers here listen on 127.0.0.1, which the default policy refuses
# (tests/test_webhook_targets.py shows that): these tests allow it.
FAST = SenderConfig(
    timeout=5, max_attempts=8, backoff=(0.05,), poll_interval=0.05, allow_private=True
)


# --- the receiver ---------------------------------------------------------------------


def verify_signature(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """The check docs/webhooks.md gives clients, written out again."""
    fields = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - timestamp) <= tolerance


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        header = self.headers.get("X-SMSAPI-Signature")
        return header is not None and verify_signature(secret, self.body, header)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the sender opens up to 20 connections at once
    daemon_threads = True


class Receiver:
    """An HTTP server that records every POST and answers with scripted statuses."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.statuses: dict[str, list[int]] = {}  # path -> statuses to answer first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.calls.append(Call(self.path, dict(self.headers.items()), body))
                    script = receiver.statuses.get(self.path) or []
                    status = script.pop(0) if script else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answer {status}".encode())

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def to(self, path: str) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if call.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


# --- the sender -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cursor(settings):
    """Webhooks start after the events already stored (as the migration sets it up)."""
    settings.EVENTS_GAP_GRACE = 0.2  # PostgreSQL: ids of earlier tests leave a hole at the start
    settings.WEBHOOK_ALLOW_PRIVATE = True  # /v1/send accepts callback URLs on 127.0.0.1
    WebhookCursor.objects.update_or_create(
        name="webhooks",
        defaults={"last_event_id": last_event_id(), "updated_at": timezone.now()},
    )


@contextlib.contextmanager
def running_sender(config: SenderConfig = FAST) -> Iterator[WebhookSender]:
    sender = WebhookSender(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(sender.run(),), daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        loop.call_soon_threadsafe(sender.stop)
        thread.join(20)
        loop.close()
        assert not thread.is_alive()


def make_key(name: str, **fields) -> ApiKey:
    return ApiKey.objects.create(
        name=name, prefix=name[:12], key_hash=hashlib.sha256(name.encode()).hexdigest(), **fields
    )


def settled(count: int = 1):
    """``count`` deliveries planned, each delivered or failed for good."""

    def check() -> bool:
        deliveries = WebhookDelivery.objects.all()
        return deliveries.count() == count and not deliveries.filter(state="pending").exists()

    return check


# --- tests --------------------------------------------------------------------------------


def post_one_receipt(receiver: Receiver, path: str, statuses: list[int]) -> int:
    """A receipt event for a message whose callback is ``path`` on the receiver, which
    answers ``statuses`` first (then 200); returns once the sender has settled it."""
    receiver.statuses[path] = statuses
    message = make_message()
    Message.objects.filter(pk=message.pk).update(callback_url=receiver.url(path))
    with running_sender():
        (event_id,) = add_events(1, "receipt", message=message, ring=False)
        wait_until(settled())
    return event_id


def test_receipt_and_final_status_are_posted_signed_with_the_keys_secret(receiver):
    key = make_key("client-a", webhook_secret="s3cret", default_callback_url=receiver.url("/key"))
    message = make_message()
    Message.objects.filter(pk=message.pk).update(api_key=key, callback_url=receiver.url("/cb"))
    with running_sender():
        (receipt_id,) = add_events(1, "receipt", message=message, ring=False)
        # Not final: no webhook. Final: one.
        Event.objects.create(
            type="status",
            message=message,
            payload={"type": "status", "id": str(message.pk), "state": "submitted"},
            created_at=timezone.now(),
        )
        (status_id,) = add_events(1, "status", message=message, ring=False)
        wait_until(settled(2))

    # The message's own URL wins over the key's default.
    calls = {int(call.headers["X-SMSAPI-Event-Id"]): call for call in receiver.to("/cb")}
    assert set(calls) == {receipt_id, status_id} and receiver.to("/key") == []
    receipt = calls[receipt_id]
    assert receipt.json == event_data(Event.objects.get(pk=receipt_id))
    assert receipt.json["type"] == "receipt" and receipt.json["id"] == str(message.pk)
    assert receipt.headers["Content-Type"] == "application/json"
    assert receipt.signed_with("s3cret") and not receipt.signed_with("another")
    assert calls[status_id].json["state"] == "delivered" and calls[status_id].signed_with("s3cret")
    for delivery in WebhookDelivery.objects.all():
        assert delivery.state == "delivered" and delivery.attempts == 1
        (attempt,) = delivery.attempt_log.all()
        assert attempt.status_code == 200 and attempt.response_excerpt == "answer 200"


def test_a_failing_receiver_gets_it_again_and_every_attempt_is_recorded(receiver):
    event_id = post_one_receipt(receiver, "/flaky", [500, 500])

    delivery = WebhookDelivery.objects.get()
    assert delivery.event_id == event_id and delivery.state == "delivered"
    assert delivery.attempts == 3 and delivery.last_status == 200
    attempts = list(delivery.attempt_log.order_by("id"))
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert attempts[0].response_excerpt == "answer 500"
    calls = receiver.to("/flaky")
    assert [c.headers["X-SMSAPI-Delivery-Attempt"] for c in calls] == ["1", "2", "3"]
    assert len({c.body for c in calls}) == 1  # the same body every time


def test_an_unreachable_receiver_fails_for_good_after_the_last_attempt():
    message = make_message()
    dead = f"http://127.0.0.1:{free_port()}/gone"
    Message.objects.filter(pk=message.pk).update(callback_url=dead)
    with running_sender(replace(FAST, max_attempts=2)):
        add_events(1, "receipt", message=message, ring=False)
        wait_until(settled())
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "failed" and delivery.attempts == 2
    assert delivery.last_status is None and "ConnectError" in delivery.last_error
    assert [a.status_code for a in delivery.attempt_log.all()] == [None, None]


def test_a_message_without_key_is_signed_with_the_global_secret_or_not_at_all(receiver, settings):
    first, second = make_message(), make_message()
    Message.objects.filter(pk__in=[first.pk, second.pk]).update(callback_url=receiver.url("/x"))
    with running_sender():
        settings.WEBHOOK_SECRET = "global"
        (signed,) = add_events(1, "receipt", message=first, ring=False)
        wait_until(lambda: len(receiver.calls) == 1)
        settings.WEBHOOK_SECRET = ""
        (unsigned,) = add_events(1, "receipt", message=second, ring=False)
        wait_until(lambda: len(receiver.calls) == 2)
    calls = {int(c.headers["X-SMSAPI-Event-Id"]): c for c in receiver.calls}
    assert calls[signed].signed_with("global")
    assert "X-SMSAPI-Signature" not in calls[unsigned].headers


def test_incoming_messages_go_to_every_key_that_receives_them(receiver, settings):
    settings.WEBHOOK_INCOMING_URL = receiver.url("/global")
    settings.WEBHOOK_SECRET = "global"
    make_key("receives", webhook_secret="k1", default_callback_url=receiver.url("/k1"))
    make_key("no-mo", default_callback_url=receiver.url("/no-mo"), receive_incoming=False)
    make_key("revoked", default_callback_url=receiver.url("/revoked"), revoked_at=timezone.now())
    make_key("no-url", webhook_secret="k4")
    with running_sender():
        (event_id,) = add_events(1, "mo", ring=False)
        wait_until(settled(2))
    (to_key,) = receiver.to("/k1")
    (to_global,) = receiver.to("/global")
    assert to_key.signed_with("k1") and to_global.signed_with("global")
    body = to_key.json
    assert body["type"] == "mo" and body["event_id"] == event_id
    assert body["text"] == "mo 0 ünïcode\nsecond line" and body["src"] == "5559999"
    assert WebhookDelivery.objects.count() == 2


def test_planning_gives_each_event_its_receivers_and_reads_past_the_rest(settings):
    """Who gets what (docs/webhooks.md), planned from one query over a range of ids."""
    settings.WEBHOOK_INCOMING_URL = "http://global.example/mo"
    key = make_key("with-url", default_callback_url="http://key.example/cb")
    make_key("mo-revoked", default_callback_url="http://gone.example", revoked_at=timezone.now())
    own_url, key_url, no_url = make_message(), make_message(), make_message()
    Message.objects.filter(pk=own_url.pk).update(api_key=key, callback_url="http://own.example")
    Message.objects.filter(pk=key_url.pk).update(api_key=key)
    Message.objects.filter(pk=no_url.pk).update(api_key=make_key("without-url"))
    after = last_event_id()
    now = timezone.now()
    not_final = {"type": "status", "id": str(own_url.pk), "state": "submitted"}
    Event.objects.create(type="status", message=own_url, payload=not_final, created_at=now)
    (own_receipt,) = add_events(1, "receipt", message=own_url, ring=False)
    (own_final,) = add_events(1, "status", message=own_url, ring=False)
    (key_receipt,) = add_events(1, "receipt", message=key_url, ring=False)
    add_events(1, "receipt", message=no_url, ring=False)
    add_events(1, "status", message=no_url, ring=False)
    (incoming,) = add_events(1, "mo", ring=False)

    with Sql() as sql:
        planned = plan_deliveries(sql, after, last_event_id(), now)
        only_not_final = plan_deliveries(sql, after, own_receipt - 1, now)

    assert [(d.event_id, d.url, d.api_key_id) for d in planned] == [
        (own_receipt, "http://own.example", key.pk),
        (own_final, "http://own.example", key.pk),
        (key_receipt, "http://key.example/cb", key.pk),
        (incoming, "http://key.example/cb", key.pk),
        (incoming, "http://global.example/mo", None),
    ]
    assert only_not_final == []


def test_a_missing_cursor_is_made_again_at_the_newest_event():
    """The migration makes the cursor; if it is gone, planning starts with new events
    (what came before is not replayed), as a live stream that starts now does."""
    message = make_message()
    Message.objects.filter(pk=message.pk).update(callback_url="http://own.example")
    WebhookCursor.objects.all().delete()
    (old,) = add_events(1, "receipt", message=message, ring=False)
    planner = Planner()
    assert planner.plan() == 0
    assert WebhookCursor.objects.get().last_event_id == old
    (new,) = add_events(1, "receipt", message=message, ring=False)
    assert planner.plan() > 0
    assert list(WebhookDelivery.objects.values_list("event_id", flat=True)) == [new]


def test_two_senders_share_the_work_and_post_each_event_once(receiver):
    message = make_message()
    Message.objects.filter(pk=message.pk).update(callback_url=receiver.url("/many"))
    with running_sender(), running_sender():
        ids = add_events(30, "receipt", message=message, ring=False)
        wait_until(lambda: WebhookDelivery.objects.filter(state="delivered").count() == 30)
    posted = [int(c.headers["X-SMSAPI-Event-Id"]) for c in receiver.to("/many")]
    assert sorted(posted) == ids
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {1}


def test_the_sender_process_posts_receipts_and_incoming_messages_end_to_end(
    receiver, simulator, start_worker, tmp_path
):
    """API -> worker -> SMSC simulator -> receipt and MO -> ``manage.py webhook_sender``."""
    start_worker(simulator.port)
    log = open(tmp_path / "webhook_sender.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "manage.py", "webhook_sender"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "SMSAPI_DATA_DIR": str(tmp_path),
            "WEBHOOK_INCOMING_URL": receiver.url("/incoming"),
            "WEBHOOK_SECRET": "process-secret",
            "WEBHOOK_POLL_INTERVAL": "0.1",
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "EVENTS_GAP_GRACE": "0.2",
            "LOG_FORMAT": "json",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
        response = APIClient().post(
            "/v1/send", {"dst": "5551234", "text": "hi", "callback_url": receiver.url("/dlr")}
        )
        assert response.status_code == 200, response.content
        simulator.inject_mo("5559876", "smsapi", "hello from a phone")
        wait_until(lambda: receiver.to("/dlr") and receiver.to("/incoming"), timeout=30)
        (receipt,) = [c for c in receiver.to("/dlr") if c.json["type"] == "receipt"]
        assert receipt.json["id"] == response.json()["id"]
        assert receipt.json["state"] == "DELIVRD" and receipt.signed_with("process-secret")
        wait_until(lambda: len(receiver.to("/dlr")) == 2)  # and the final status
        assert {c.json["type"] for c in receiver.to("/dlr")} == {"receipt", "status"}
        (incoming,) = receiver.to("/incoming")
        assert incoming.json["text"] == "hello from a phone" and incoming.json["type"] == "mo"
        assert incoming.signed_with("process-secret")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
        log.close()
    assert code == 0
    # Structured logs: one JSON object a line, the message id on the lines about a message.
    lines = [
        json.loads(line) for line in (tmp_path / "webhook_sender.log").read_text().splitlines()
    ]
    delivered = [line for line in lines if line["message"].startswith("webhook delivered")]
    assert {line.get("message_id") for line in delivered} == {int(response.json()["id"]), None}


def test_the_admin_lists_deliveries_and_shows_every_attempt(receiver, client, django_user_model):
    event_id = post_one_receipt(receiver, "/admin-seen", [503])
    delivery = WebhookDelivery.objects.get()
    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "x"))

    delivered = client.get("/admin/messaging/webhookdelivery/?state__exact=delivered")
    assert delivered.status_code == 200
    assert receiver.url("/admin-seen") in delivered.content.decode()
    failed = client.get("/admin/messaging/webhookdelivery/?state__exact=failed")
    assert receiver.url("/admin-seen") not in failed.content.decode()

    page = client.get(f"/admin/messaging/webhookdelivery/{delivery.pk}/change/").content.decode()
    for shown in (
        "answer 503",
        "answer 200",
        receiver.url("/admin-seen"),
        f"event_id&quot;:{event_id}",
    ):
        assert shown in page, shown
    assert "Save" not in page  # read-only
