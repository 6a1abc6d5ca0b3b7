"""Scheduled delivery, validity, and the one-worker rule on SQLite."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from messaging.models import LinkStatus, Message
from tests.conftest import ROOT, WorkerProcess, wait_until

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def test_scheduled_message_is_sent_at_its_time(simulator, start_worker):
    start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
    response = APIClient().post("/v1/send", {"dst": "lisa", "text": "later", "schedule": "2"})
    assert response.status_code == 202
    message_id = response.json()["id"]
    assert APIClient().get(f"/v1/query?id={message_id}").json()["message_state"] == "SCHEDULED"
    time.sleep(1)
    assert simulator.submits() == []  # not before its time
    wait_until(lambda: Message.objects.get(pk=message_id).state == "delivered", timeout=15)
    record = simulator.submits()[0]
    assert record.received_at >= Message.objects.get(pk=message_id).schedule_at.timestamp()


def test_queued_message_past_its_validity_expires_unsent(simulator, start_worker):
    body = (
        APIClient()
        .post("/v1/send", {"dst": "lisa", "text": "too late", "validity": "1", "wait": "0"})
        .json()
    )
    Message.objects.filter(pk=body["id"]).update(validity_until=timezone.now() - timedelta(1))
    start_worker(simulator.port)
    wait_until(lambda: Message.objects.get(pk=body["id"]).state == "expired", timeout=15)
    assert simulator.submits() == []


@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_a_second_worker_on_sqlite_refuses_to_start(simulator, start_worker, tmp_path):
    first = start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
    second = WorkerProcess(simulator.port, tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "smpp_worker"],
        cwd=ROOT,
        env=second.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "only one worker may run" in result.stderr
    assert first.process.poll() is None
    assert connection.vendor == "sqlite"
