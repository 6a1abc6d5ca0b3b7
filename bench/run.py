"""``make bench``: the figures of issue 7 for both set-ups, as a table and bench/results.json.

    .venv/bin/python bench/run.py                      # both set-ups, full size
    .venv/bin/python bench/run.py --setup postgres     # one set-up
    .venv/bin/python bench/run.py --only e2e,window    # some scenarios
    .venv/bin/python bench/run.py --quick              # smaller counts, for a smoke run

PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis on 127.0.0.1:6379 are
needed for the ``postgres`` set-up; the bench creates and drops its own
database (``smsapi_bench``) and uses Redis database 5. ``wrk`` (Debian package)
is the load generator for /v1/send.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scenarios  # noqa: E402
from bench.load import wrk_available  # noqa: E402
from bench.services import ROOT, Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
LONG_TEXT = 200  # characters of GSM-7: two parts of 153, each with its UDH
SCENARIOS = (
    "send_nowait",
    "send_wait",
    "batch",
    "batch_long",
    "e2e",
    "window",
    "window_two",
    "memory",
)
TARGETS = {
    "send_nowait": "1,500 req/s, p99 < 30 ms",
    "send_wait": "1,000 req/s",
    "batch": "20,000 msg/s",
    "batch_long": "(none: what long texts cost)",
    "e2e": "5,000 msg/s, receipt->SSE p99 < 100 ms",
    "window": "95 % of 2,000/s",
    "window_two": "95 % of 4,000/s (two connectors, 50 ms, window 100 each)",
    "memory": "worker < 250 MB",
}


def measure(setup: str, only: list[str], quick: bool, http_workers: int) -> dict:
    sizes = {
        "send_seconds": 5 if quick else 15,
        "batch_messages": 20_000 if quick else 100_000,
        "e2e_messages": 10_000 if quick else 50_000,
        "window_seconds": 5 if quick else 15,
        "queued": 100_000 if quick else 1_000_000,
        "memory_seconds": 15 if quick else 30,
    }
    results: dict = {}
    for name in only:
        stack = Stack(setup, http_workers=http_workers).prepare()
        started = time.monotonic()
        print(f"[{setup}] {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "send_nowait":
                results[name] = scenarios.send_requests(stack, False, sizes["send_seconds"])
            elif name == "send_wait":
                results[name] = scenarios.send_requests(stack, True, sizes["send_seconds"])
            elif name == "batch":
                results[name] = scenarios.batch_ingest(stack, sizes["batch_messages"])
            elif name == "batch_long":
                results[name] = scenarios.batch_ingest(
                    stack, sizes["batch_messages"], text_length=LONG_TEXT
                )
            elif name == "e2e":
                results[name] = scenarios.end_to_end(stack, sizes["e2e_messages"])
            elif name == "window":
                results[name] = scenarios.window_bound(stack, sizes["window_seconds"])
            elif name == "window_two":
                results[name] = scenarios.two_connectors_bound(stack, sizes["window_seconds"])
            elif name == "memory":
                results[name] = scenarios.memory_with_queue(
                    stack, sizes["queued"], sizes["memory_seconds"]
                )
        except Exception as exc:  # one broken scenario must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            stack.close()
        print(
            f"[{setup}] {name}: {json.dumps(results[name])} ({time.monotonic() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return results


def cell(figures: dict | None, name: str) -> str:
    """One set-up's figure for one row of the table."""
    if not figures:
        return "-"
    if "error" in figures:
        return "error: " + figures["error"][:40]
    if name in ("send_nowait", "send_wait"):
        return (
            f"{figures['req_per_s']:,.0f} req/s, "
            f"p50 {figures['p50_ms']} / p99 {figures['p99_ms']} ms"
        )
    if name == "batch":
        return f"{figures['msg_per_s']:,.0f} msg/s"
    if name == "batch_long":
        return f"{figures['msg_per_s']:,.0f} msg/s ({figures['parts_per_s']:,.0f} parts/s)"
    if name == "e2e":
        return (
            f"{figures['msg_per_s']:,.0f} msg/s; post->wire p50 {figures['post_to_submit_p50_ms']}"
            f" / p99 {figures['post_to_submit_p99_ms']} ms; receipt->SSE p50 "
            f"{figures['receipt_to_sse_p50_ms']} / p99 {figures['receipt_to_sse_p99_ms']} ms"
        )
    if name in ("window", "window_two"):
        return f"{figures['msg_per_s']:,.0f} msg/s = {figures['share'] * 100:.1f} %"
    if name == "memory":
        return (
            f"server {figures['server_peak_rss_mb']} MB, worker {figures['worker_peak_rss_mb']} MB"
        )
    return json.dumps(figures)


LABELS = {
    "send_nowait": "1 /v1/send wait=0, 20 clients",
    "send_wait": "2 /v1/send default wait, 20 clients",
    "batch": "3 batch ingest",
    "batch_long": f"3b batch ingest, {LONG_TEXT}-character texts (2 parts)",
    "e2e": "4 end to end, 50,000 msgs to SSE",
    "window": "5 50 ms SMSC, window 100",
    "window_two": "5b two connectors, 50 ms SMSC each, window 100",
    "memory": "6 peak RSS, 1,000,000 queued",
}


def table(results: dict) -> str:
    rows = [("figure", "target (PostgreSQL)", "embedded (SQLite)", "PostgreSQL + Redis")]
    for name in SCENARIOS:
        if not any(name in r for r in results["setups"].values()):
            continue
        rows.append(
            (
                LABELS[name],
                TARGETS[name],
                cell(results["setups"].get("embedded", {}).get(name), name),
                cell(results["setups"].get("postgres", {}).get(name), name),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", default="embedded,postgres", help="embedded, postgres or both")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run")
    parser.add_argument("--quick", action="store_true", help="smaller counts (smoke run)")
    parser.add_argument("--http-workers", type=int, default=2, help="daphne processes (postgres)")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the JSON")
    args = parser.parse_args()
    if not wrk_available():
        sys.exit("wrk is needed (apt-get install wrk), or run `make bench`")
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    results = {
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "quick": args.quick,
        "http_workers": args.http_workers,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "setups": {},
    }
    for setup in args.setup.split(","):
        results["setups"][setup] = measure(setup, only, args.quick, args.http_workers)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n(figures also in {args.output})")


if __name__ == "__main__":
    main()
