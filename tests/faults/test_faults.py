"""The fault suite: thousands of messages through a misbehaving SMSC and a dying worker.

Run by ``make faults`` (PostgreSQL + Redis). Each scenario prints one line of
figures; ``test-output/faults.json`` keeps them. What every scenario shows:
every message reaches a final state, none is lost, nothing the SMSC accepted
is sent again unless the part is marked possibly duplicated, and the SMSC's
rate and window are never exceeded.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from messaging import store
from messaging.models import Message, MessagePart, Receipt
from messaging.outbound import split_for_smsc
from messaging.states import FINAL_STATES
from smpp_gateway.receipts import smsc_id_variants as variants
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread

from ..conftest import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

MESSAGES = 2000
RESULTS = Path(__file__).resolve().parents[2] / "test-output" / "faults.json"
# The worker stays under the SMSC's limits; the simulator counts any breach.
WORKER_ENV = {
    "SMPP_WINDOW": "20",
    "SMPP_MAX_RATE": "900",
    "SMPP_RESPONSE_TIMEOUT": "1",
    # Long enough that a busy worker's parts are never taken from it, short enough
    # that a killed worker's parts come back within the test.
    "SMPP_LEASE_SECONDS": "10",
    "SMPP_MAX_ATTEMPTS": "50",
}
SMSC_LIMITS = {"max_window": 20, "max_rate": 1000.0}

SCENARIOS = {
    "throttled 0x58": {"error_rate": 0.05, "error_status": 0x58},
    "queue full 0x14": {"error_rate": 0.05, "error_status": 0x14},
    "system error 0x08": {"error_rate": 0.05, "error_status": 0x08},
    "slow responses": {"response_delay": 0.05},
    "dropped responses": {"drop_response_rate": 0.01},
    "disconnect every 500 PDUs": {"disconnect_every_pdus": 500},
    "receipts before responses": {"receipt_before_response": True},
    "malformed PDUs": {"malformed_rate": 0.02},
}


def queue_messages(tag: str, count: int) -> list[int]:
    split = split_for_smsc("x", "gsm7")
    batch = [
        store.NewMessage(dst=f"4{i:07d}", text=f"{tag}-{i}", split=split, register="final")
        for i in range(count)
    ]
    ids = []
    for start in range(0, count, 500):
        ids += [m.pk for m in store.create_messages(batch[start : start + 500])]
    # The text above was only for the dataclass; store the real payloads.
    for message_id, new in zip(ids, batch, strict=True):
        MessagePart.objects.filter(message_id=message_id).update(short_message=new.text.encode())
    return ids


def check_and_report(name: str, smsc: SimulatorThread, ids: list[int], started: float) -> dict:
    elapsed = time.monotonic() - started
    states = Counter(Message.objects.filter(pk__in=ids).values_list("state", flat=True))
    assert set(states) <= FINAL_STATES, states
    assert sum(states.values()) == len(ids)  # none lost
    sent = Counter(r.short_message for r in smsc.submits())
    assert {
        m.encode() for m in Message.objects.filter(pk__in=ids).values_list("text", flat=True)
    } <= set(sent)
    twice = {text.decode() for text, n in sent.items() if n > 1}
    marked = set(
        MessagePart.objects.filter(message_id__in=ids, possibly_duplicated=True).values_list(
            "message__text", flat=True
        )
    )
    assert twice <= marked, f"sent twice without the mark: {sorted(twice - marked)[:5]}"
    # Every receipt matched whose SMSC id a part holds. Those left are for submits
    # whose response never came (dropped, or the link or the worker died first):
    # their id was never learnt, and the part holds the id of the resend.
    known = {v for (i,) in MessagePart.objects.values_list("smsc_id") if i for v in variants(i)}
    unmatched = Receipt.objects.filter(matched_at__isnull=True).values_list("smsc_id", flat=True)
    orphans = [i for i in unmatched if known & set(variants(i))]
    assert not orphans, f"receipts unmatched though their part is known: {orphans[:5]}"
    stats = smsc.stats()
    assert stats["window_violations"] == 0
    figures = {
        "scenario": name,
        "messages": len(ids),
        "seconds": round(elapsed, 2),
        "msg_per_s": round(len(ids) / elapsed, 1),
        "states": dict(states),
        "submits_received": stats["submits_received"],
        "sent_twice": len(twice),
        "marked_possibly_duplicated": len(marked),
        "smsc_throttled_for_rate": stats["throttled"],
        "window_violations": stats["window_violations"],
        "max_outstanding_seen": stats["max_outstanding_seen"],
        "max_rate_seen": stats["max_rate_seen"],
    }
    print(
        f"\n{name:28s} {len(ids):6d} msgs {elapsed:6.1f} s {figures['msg_per_s']:7.1f}/s "
        f"states={dict(states)} resent={len(twice)} marked={len(marked)} "
        f"max_window={stats['max_outstanding_seen']} max_rate={stats['max_rate_seen']}/s "
        f"window_violations={stats['window_violations']} rate_throttles={stats['throttled']}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = figures
    RESULTS.write_text(json.dumps(results, indent=2))
    return figures


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault(name, start_worker):
    config = SimulatorConfig(port=0, receipt_delay=0.01, seed=7, **SMSC_LIMITS, **SCENARIOS[name])
    with SimulatorThread(config) as smsc:
        ids = queue_messages(name.split()[0], MESSAGES)
        started = time.monotonic()
        start_worker(smsc.port, **WORKER_ENV)
        wait_until(
            lambda: Message.objects.filter(pk__in=ids, state="delivered").count() == len(ids),
            timeout=180,
            interval=0.5,
        )
        figures = check_and_report(name, smsc, ids, started)
    assert figures["smsc_throttled_for_rate"] == 0  # our rate stayed under the SMSC's


@pytest.mark.timeout(300)
def test_worker_killed_at_random_moments(start_worker):
    rng = random.Random(11)
    config = SimulatorConfig(port=0, receipt_delay=0.01, **SMSC_LIMITS)
    with SimulatorThread(config) as smsc:
        ids = queue_messages("kill", MESSAGES)
        started = time.monotonic()
        worker = start_worker(smsc.port, **WORKER_ENV)
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.5))
            worker.stop(signal.SIGKILL)
            worker = start_worker(smsc.port, **WORKER_ENV)
        wait_until(
            lambda: Message.objects.filter(pk__in=ids, state="delivered").count() == len(ids),
            timeout=180,
            interval=0.5,
        )
        check_and_report("worker SIGKILLed 3 times", smsc, ids, started)


@pytest.mark.timeout(600)
def test_three_workers_share_the_queue_without_duplicates(start_worker):
    if connection.vendor != "postgresql":
        pytest.skip("several workers need PostgreSQL")
    config = SimulatorConfig(port=0, receipt_delay=0.01)
    with SimulatorThread(config) as smsc:
        ids = queue_messages("three", 10_000)
        started = time.monotonic()
        env = {**WORKER_ENV, "SMPP_MAX_RATE": "0", "SMPP_WINDOW": "50"}
        for _ in range(3):
            start_worker(smsc.port, **env)
        wait_until(
            lambda: Message.objects.filter(pk__in=ids, state="delivered").count() == len(ids),
            timeout=300,
            interval=0.5,
        )
        figures = check_and_report("three workers", smsc, ids, started)
        sessions = Counter(r.session for r in smsc.submits())
    assert figures["sent_twice"] == 0
    assert len(sessions) == 3  # every worker took its share
