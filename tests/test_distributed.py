"""The distributed set-up: two daphne processes, the worker as its own process, Redis.

Polling is switched off in the servers, so every event and every answer that
reaches a client went through the Redis channel layer.
"""

from __future__ import annotations

import http.client
import json
import os
import random
from contextlib import ExitStack

import pytest

from messaging.models import LinkStatus
from tests.conftest import wait_until
from tests.live import SseClient, daphne

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:6379/{random.randint(4, 15)}"
NEVER = "3600"


def post(port: int, path: str, form: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("POST", path, form, {"Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_send_on_one_server_receipts_stream_from_another(tmp_path, simulator, start_worker):
    env = {"REDIS_URL": REDIS_URL, "EVENTS_POLL_INTERVAL": NEVER, "SSE_KEEPALIVE": NEVER}
    with ExitStack() as stack:
        server_a = stack.enter_context(daphne(tmp_path, **env))
        server_b = stack.enter_context(daphne(tmp_path, **env))
        start_worker(simulator.port, REDIS_URL=REDIS_URL)
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
        stream = SseClient(server_b.port, "/v1/sse?type=receipt")
        stack.callback(stream.close)
        assert stream.next_block().lines[0].startswith("retry:")
        sent = []
        for i in range(20):
            status, body = post(server_a.port, "/v1/send", f"src=bart&dst=55{i:03d}&text=hi+{i}")
            assert status == 200, body  # the SMSC answered within the wait
            sent.append(body["id"])
        receipts = [stream.next_event().json for _ in sent]
    assert sorted(r["id"] for r in receipts) == sorted(sent)
    assert all(r["state"] == "DELIVRD" and r["type"] == "receipt" for r in receipts)
