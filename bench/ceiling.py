"""How many ``/v1/send`` requests a second the server stack itself allows here.

Figure 1 of ``bench/run.py`` (``/v1/send`` with ``wait=0``, 20 wrk clients, the
PostgreSQL set-up: two daphne processes, the worker and the simulator) is
measured here beside the same request served by less and less of the stack:

- ``send``: ``/v1/send`` with ``wait=0``, figure 1 itself;
- ``dry_run``: ``/v1/send`` with ``dry_run=1``: the whole API (DRF, validation,
  the split) without the store, the worker's bell or the worker's work;
- ``django``: a plain ``async def`` Django view that reads the form
  (``bench/ceiling_urls.py``) behind the API's handler and middleware;
- ``bare``: an ASGI application with no Django (``bench/bare_asgi.py``): daphne
  and Twisted alone.

Each round measures all four one after the other, so that a slow spell of the
machine falls on every row; the table gives each row's median over the rounds,
and the CPU a request took in the daphne processes (``server ms/req``), which
moves less with the machine's speed than requests/s do.

    .venv/bin/python bench/ceiling.py              # 3 rounds of 10 s each
    .venv/bin/python bench/ceiling.py --rounds 5 --seconds 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import wrk_available  # noqa: E402
from bench.scenarios import FAST_SMSC, SEND_BODY, measure_wrk  # noqa: E402
from bench.services import SERVICE_APPLICATION, Stack  # noqa: E402

BARE = "bench.bare_asgi:bare_application"
# name: (what daphne serves, path, form body)
ROWS = {
    "send": (SERVICE_APPLICATION, "/v1/send", SEND_BODY + "&wait=0"),
    "dry_run": (SERVICE_APPLICATION, "/v1/send", SEND_BODY + "&dry_run=1"),
    "django": (SERVICE_APPLICATION, "/v1/ceiling", SEND_BODY),
    "bare": (BARE, "/", SEND_BODY),
}
CONNECTIONS = 20


def measure(stack: Stack, path: str, body: str, seconds: float) -> dict:
    figures, cores = measure_wrk(stack, path, body, CONNECTIONS, seconds)
    if figures["errors"]:
        raise RuntimeError(f"{path}: {figures['errors']} errors of {figures['requests']} requests")
    rate = figures["req_per_s"]
    return {
        "req_per_s": rate,
        "p99_ms": figures["p99_us"] / 1000,
        "server_cores": cores.get("server", 0.0),
        "all_cores": sum(cores.values()),
        "server_ms_per_req": 1000 * cores.get("server", 0.0) / rate,
    }


def one_round(stack: Stack, seconds: float) -> dict[str, dict]:
    figures = {}
    for application in (SERVICE_APPLICATION, BARE):
        stack.application = application
        stack.start(FAST_SMSC, spread="hash")  # wrk connects all at once
        try:
            for name, (served, path, body) in ROWS.items():
                if served == application:
                    figures[name] = measure(stack, path, body, seconds)
        finally:
            stack.stop_service()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--http-workers", type=int, default=2, help="daphne processes")
    args = parser.parse_args()
    if not wrk_available():
        sys.exit("wrk is needed: apt-get install wrk (or make bench, which installs it)")
    stack = Stack("postgres", http_workers=args.http_workers).prepare()
    stack.env["DJANGO_SETTINGS_MODULE"] = "bench.ceiling_settings"
    rounds = []
    try:
        for number in range(1, args.rounds + 1):
            rounds.append(one_round(stack, args.seconds))
            line = ", ".join(f"{n} {f['req_per_s']:,.0f}" for n, f in rounds[-1].items())
            print(f"round {number}: {line} req/s", flush=True)
    finally:
        stack.close()
    print()
    print("| row | req/s | p99 ms | server cores | server ms/req | all cores |")
    print("|---|---|---|---|---|---|")
    for name in ROWS:
        row = {key: statistics.median(r[name][key] for r in rounds) for key in rounds[0][name]}
        print(
            f"| {name} | {row['req_per_s']:,.0f} | {row['p99_ms']:.1f} "
            f"| {row['server_cores']:.2f} | {row['server_ms_per_req']:.2f} "
            f"| {row['all_cores']:.2f} |"
        )


if __name__ == "__main__":
    main()
