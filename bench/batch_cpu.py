"""The CPU one batch of ``POST /v1/send/batch`` takes inside the server, without HTTP.

Full bench runs move with the machine's speed, by half within an hour on some
days, more than most changes do. The CPU this process spends validating and
storing a batch moves much less, so it is how a change to the batch path is
measured (docs/performance.md, "How to reproduce"): run this in the old and the
new checkout one after the other, a few times, and compare the medians.

    .venv/bin/python bench/batch_cpu.py                     # SQLite, short texts
    .venv/bin/python bench/batch_cpu.py --text-length 200   # two GSM-7 parts each
    .venv/bin/python bench/batch_cpu.py --postgres          # 127.0.0.1:5432, as make test

Each round's items are bench/run.py's (``scenarios.batch_items``: ``--size``
messages to the same ``--size`` handsets every round); the first rounds warm up. With
``--postgres`` the figure is this process's CPU only: PostgreSQL's own work is
in the wall time, not in the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_DB = "smsapi_bench_cpu"
WARM_UP = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=25, help=f"batches ({WARM_UP} warm up)")
    parser.add_argument("--size", type=int, default=1000, help="messages a batch")
    parser.add_argument("--text-length", type=int, default=0, help="pad texts to this length")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    if args.rounds <= WARM_UP:
        sys.exit(f"--rounds must be more than the {WARM_UP} warm-up rounds")

    sys.path.insert(0, str(ROOT))
    from bench.services import drop_pg_database, recreate_pg_database

    os.environ["DJANGO_SETTINGS_MODULE"] = "smsapi.settings"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DATABASE_URL"] = (
            recreate_pg_database(PG_DB) if args.postgres else f"sqlite:///{tmp}/batch_cpu.sqlite3"
        )
        import django

        django.setup()
        from django.core.management import call_command

        from bench.scenarios import batch_items
        from messaging.api.sending import send_batch
        from smsapi.gc_tuning import tune_garbage_collector

        call_command("migrate", verbosity=0)
        tune_garbage_collector()  # as the server's processes do
        cpu, wall = [], []
        try:
            for round_ in range(args.rounds):
                items = batch_items(f"cpu-{round_}", 0, args.size, args.text_length)
                started_cpu, started = time.process_time(), time.perf_counter()
                answer = send_batch(items)
                cpu.append(time.process_time() - started_cpu)
                wall.append(time.perf_counter() - started)
                if answer.status != 200 or answer.body["accepted"] != args.size:
                    sys.exit(f"batch {round_} not accepted: {answer.status} {answer.body}")
        finally:
            if args.postgres:
                from django.db import connections

                connections.close_all()
                drop_pg_database(PG_DB)
    cpu, wall = cpu[WARM_UP:], wall[WARM_UP:]
    print(
        f"{'postgres' if args.postgres else 'sqlite'}, {args.size} messages a batch"
        f"{f', {args.text_length}-character texts' if args.text_length else ''}, "
        f"{len(cpu)} batches after {WARM_UP} warm-up: "
        f"CPU median {statistics.median(cpu) * 1000:.1f} ms (min {min(cpu) * 1000:.1f}), "
        f"wall median {statistics.median(wall) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
