"""An SMSC that floods the worker and never reads its answers: the worker's memory stays
bounded (issue 18). The worker runs as a real process (``manage.py smpp_worker``) so its
resident memory is its own; the simulator floods enquire_link after a few PDUs of each
session and stops reading, over and over, as each new bind meets the same SMSC.

Measured before the limits (SMPP_PEER_REQUEST_RATE, SMPP_WRITE_BUFFER_LIMIT): +2.9 MB a
second without end. With them the link is reset within a fraction of a second each time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import wait_until
from tests.test_worker_poison_part import queue, states

pytestmark = pytest.mark.django_db(transaction=True)

FLOOD_SECONDS = 15
GROWTH_BOUND_MB = 15  # without the limits the same flood grew the worker 25-45 MB


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_an_smsc_that_floods_and_never_reads_leaves_the_worker_bounded(start_worker):
    config = SimulatorConfig(port=0, receipt_delay=0.02, seed=5)
    with SimulatorThread(config) as simulator:
        worker = start_worker(simulator.port)
        first = queue(dst="4915550001", text="before the flood")
        wait_until(lambda: states(first) == ["delivered"], timeout=30)
        pid = worker.process.pid
        before = resident_mb(pid)

        simulator.set_config(flood_after_pdus=8, flood_rate=200_000)
        ids = [queue(dst=f"49155{n:05d}", text=f"flood {n}")[0] for n in range(20)]
        deadline = time.monotonic() + FLOOD_SECONDS
        peak = before
        while time.monotonic() < deadline:
            peak = max(peak, resident_mb(pid))
            time.sleep(0.2)
        floods = simulator.stats()["floods"]
        output = worker.output()  # before the simulator stops (which also ends the link)

        simulator.set_config(flood_after_pdus=0)
        wait_until(lambda: states(ids) == ["delivered"] * len(ids), timeout=60)
    print(
        f"worker RSS {before:.0f} MB -> peak {peak:.0f} MB over {FLOOD_SECONDS} s, {floods} floods"
    )
    assert floods >= 1
    # The worker dropped the flooding link itself, for one of its two limits.
    assert "link reset" in output or "does not read" in output
    assert peak - before < GROWTH_BOUND_MB
