"""The fault suite: thousands of messages through a misbehaving SMSC and a dying worker.

Run by ``make faults`` (PostgreSQL + Redis). Each scenario prints one line of
figures; ``test-output/faults.json`` keeps them. What every scenario shows:
every message reaches a final state, none is lost, nothing the SMSC accepted
is sent again unless the part is marked possibly duplicated, and the SMSC's
rate and window are never exceeded. The simulator counts the submits outstanding
on each session in every scenario (not only when it delays its answers), so the
window check can fail in each of them.

The hostile SMSC's scenarios (issue 18) check besides: nothing matched to the
wrong message (every part its own SMSC id, every receipt on the part with its
id), no deliver_sm redelivered for ever, and nothing published that was not sent.
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
from messaging.models import IncomingMessage, Message, MessagePart, Receipt, StateTransition
from messaging.outbound import split_for_smsc
from messaging.states import FINAL_STATES
from smpp.smsc_ids import keys_match, match_key, match_keys
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.server import JUNK_SOURCE
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import wait_until

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
    # A hostile SMSC (issue 18).
    "ids of 100 characters": {"message_id_length": 100},
    "NUL in receipts": {"receipt_nul": True},
    "truncated deliver_sm": {"truncated_deliver_rate": 0.02},
    "PDUs before bind response": {"pdus_before_bind_resp": True, "disconnect_every_pdus": 500},
    "enquire_link flood, not read": {"flood_after_pdus": 500},
    "empty ids 1%": {"empty_id_rate": 0.01},
}
# Parts the SMSC accepts without an id fail (smpp.receipts.submit_id_problem).
FAILING = {"empty ids 1%"}


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


def check_and_report(
    name: str,
    smsc: SimulatorThread,
    ids: list[int],
    started: float,
    window: int = SMSC_LIMITS["max_window"],
) -> dict:
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
    known = {match_key(i) for (i,) in MessagePart.objects.values_list("smsc_id") if i}
    unmatched = Receipt.objects.filter(matched_at__isnull=True).values_list("smsc_id", flat=True)
    orphans = [i for i in unmatched if known & set(match_keys(i))]
    assert not orphans, f"receipts unmatched though their part is known: {orphans[:5]}"
    # No deliver_sm sent for ever: every receipt acknowledged, nothing left to send.
    wait_until(
        lambda: smsc.stats()["receipts_pending"] == 0 and smsc.stats()["deliveries_waiting"] == 0,
        timeout=30,
        interval=0.2,
    )
    stats = smsc.stats()
    assert stats["window_violations"] == 0
    assert 0 < stats["max_outstanding_seen"] <= window  # the worker's window, as the SMSC saw it
    # Nothing matched to the wrong message: SMSC ids are each one part's, and every
    # matched receipt sits on the part that holds its id.
    ids_held = list(
        MessagePart.objects.filter(message_id__in=ids, smsc_id__isnull=False).values_list(
            "smsc_id", flat=True
        )
    )
    assert len(ids_held) == len(set(ids_held)), "two parts share an SMSC id"
    for smsc_id, held in Receipt.objects.filter(part__message_id__in=ids).values_list(
        "smsc_id", "part__smsc_id"
    ):
        assert keys_match(held, smsc_id), (smsc_id, held)
    assert stats["truncated_accepted"] == 0
    assert not IncomingMessage.objects.filter(src=JUNK_SOURCE).exists()
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
        "deliveries_refused": stats["deliveries_refused"],
        "floods": stats["floods"],
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
        ending = ["delivered", "failed"] if name in FAILING else ["delivered"]
        wait_until(
            lambda: Message.objects.filter(pk__in=ids, state__in=ending).count() == len(ids),
            timeout=180,
            interval=0.5,
        )
        figures = check_and_report(name, smsc, ids, started)
        stats = smsc.stats()
        empty_ids = sum(1 for r in smsc.submits() if r.empty_id)
    assert figures["smsc_throttled_for_rate"] == 0  # our rate stayed under the SMSC's
    failed = Message.objects.filter(pk__in=ids, state="failed")
    if name in FAILING:
        # Each part accepted without an id failed, with the reason, and only those.
        assert failed.count() == empty_ids == stats["empty_ids_sent"] > 0
        details = set(
            StateTransition.objects.filter(message__in=failed, to_state="failed").values_list(
                "detail", flat=True
            )
        )
        assert details == {"SMSC accepted without a message_id"}
    if name == "truncated deliver_sm":
        assert stats["truncated_sent"] == stats["deliveries_refused"] > 0
    if name == "enquire_link flood, not read":
        assert stats["floods"] > 0
    if name == "PDUs before bind response":
        assert stats["pre_bind_pdus_sent"] > 0
        wait_until(lambda: IncomingMessage.objects.filter(text="early").exists(), timeout=30)


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
        figures = check_and_report("three workers", smsc, ids, started, window=50)
        sessions = Counter(r.session for r in smsc.submits())
    assert figures["sent_twice"] == 0
    assert len(sessions) == 3  # every worker took its share


@pytest.mark.timeout(120)
def test_the_window_check_can_fail(start_worker):
    """A worker keeping twice the SMSC's window is caught by the simulator's count,
    though each submit is answered at once (before, only delayed answers counted)."""
    config = SimulatorConfig(port=0, receipt_delay=0.01, max_window=10)
    with SimulatorThread(config) as smsc:
        ids = queue_messages("wide", 300)
        start_worker(smsc.port, **{**WORKER_ENV, "SMPP_WINDOW": "40", "SMPP_MAX_RATE": "0"})
        wait_until(
            lambda: Message.objects.filter(pk__in=ids, state="delivered").count() == len(ids),
            timeout=60,
            interval=0.5,
        )
        stats = smsc.stats()
    assert stats["max_outstanding_seen"] > 10 and stats["window_violations"] > 0
