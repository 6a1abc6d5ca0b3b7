"""Per message, side by side with Kannel (issue 23), in one run against the same SMSC.

One SMS a request, closed loop (wrk) at 1, 20 and 100 clients:

- Kannel 1.4.x (``bench/kannel.py``): GET /cgi-bin/sendsms with DLR on; its
  accepted rate (HTTP answers) and the rate reaching the SMSC (the simulator's
  accepted submits over the same seconds); ``kannel_store``: the same with its
  store file on (``store-type = file``), the Kannel that keeps what it accepted;
- ours, ``embedded`` and ``postgres`` (``bench/services.py`` ``Stack``):
  ``/v1/send`` with ``wait=0``, with the default wait, and with ``dry_run=1``
  (nothing stored, nothing sent: the ceiling of the request path);

with p50/p99 and the CPU per message of every process (Kannel: bearerbox and
smsbox; ours: the server(s), the worker, PostgreSQL and Redis). Then the end to
end: 20,000 messages through ``/v1/send/batch`` (20 batches of 1,000) until every
receipt is stored and streamed (``bench/scenarios.py`` ``end_to_end``), against
20,000 sendsms requests to Kannel until every receipt has been called back.
Our figures are given as ratios to Kannel's of the same run (mean over rounds);
the points go client count by client count, Kannel's first, so that a ratio
compares figures taken minutes apart at most.

    .venv/bin/python bench/per_message.py                    # 1 round, 10 s a point
    .venv/bin/python bench/per_message.py --rounds 2         # interleaved twice
    .venv/bin/python bench/per_message.py --only kannel,embedded --clients 1,20 --seconds 5
    .venv/bin/python bench/per_message.py --table-from bench/results-per-message.json

``--only e2e`` alone runs the end to end for Kannel and both set-ups; beside other
parts, for Kannel and the set-ups named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import kannel as kannel_bench  # noqa: E402
from bench import per_message_report as report  # noqa: E402
from bench.load import run_wrk, wrk_available  # noqa: E402
from bench.scenarios import FAST_SMSC, SEND_BODY, end_to_end  # noqa: E402
from bench.services import ROOT, CpuMeter, Simulator, Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results-per-message.json"
PARTS = ("kannel", "kannel_store", "embedded", "postgres", "e2e")
MODES = {"wait0": "&wait=0", "wait": "", "dry_run": "&dry_run=1"}
# The processes a message costs (not the simulator nor the load tool). PostgreSQL and
# Redis are counted whole (CpuMeter), so only where the set-up uses them; embedded is
# one process (HTTP and the SMPP worker).
OUR_PROCESSES = {"embedded": ("server",), "postgres": ("server", "worker", "postgres", "redis")}
KANNEL_PROCESSES = ("bearerbox", "smsbox")
E2E_MESSAGES = 20_000
WARM_UP_SECONDS = 2


def point(figures: dict, cores: dict[str, float], processes: tuple[str, ...]) -> dict:
    """One measured point: rate, latency, and CPU per message in ms (each process's too)."""
    rate = figures["req_per_s"]
    per_msg = {name: round(1000 * cores[name] / rate, 3) for name in cores} if rate else {}
    return {
        "req_per_s": round(rate, 1),
        "p50_ms": round(figures["p50_us"] / 1000, 2),
        "p99_ms": round(figures["p99_us"] / 1000, 2),
        "requests": figures["requests"],
        "errors": figures["errors"],
        "cpu_ms_per_msg": round(sum(per_msg.get(name, 0.0) for name in processes), 3),
        "cpu_ms_per_msg_by_process": per_msg,
        "cpu_cores": cores,
    }


# --- Kannel ------------------------------------------------------------------------------


def kannel_point(clients: int, seconds: float, store_file: bool = False) -> dict:
    """Kannel, fresh (simulator, bearerbox, smsbox), at ``clients`` for ``seconds``."""
    threads = min(2, clients)
    with kannel_bench.KannelStack(FAST_SMSC, store_file) as kannel:
        url = kannel.sendsms_url()
        kannel_bench.run_wrk_get(url, clients, min(WARM_UP_SECONDS, seconds), threads)
        stats = kannel.simulator.stats
        meter = kannel_bench.KannelCpuMeter(kannel).start()
        first, delivered, started = stats()["accepted"], kannel.sink.delivered, time.monotonic()
        figures = kannel_bench.run_wrk_get(url, clients, seconds, threads)
        elapsed = time.monotonic() - started
        to_smsc, receipts = stats()["accepted"] - first, kannel.sink.delivered - delivered
        result = point(figures, meter.stop(), KANNEL_PROCESSES)
    result["to_smsc_per_s"] = round(to_smsc / elapsed, 1)
    result["receipts_called_back_per_s"] = round(receipts / elapsed, 1)
    return result


def kannel_end_to_end(messages: int = E2E_MESSAGES, clients: int = 100) -> dict:
    """``messages`` sendsms requests from ``clients``, until the SMSC has had them all
    and every receipt has been called back (the dlr-url)."""
    with kannel_bench.KannelStack(FAST_SMSC) as kannel:
        stats = kannel.simulator.stats
        first, delivered = stats()["accepted"], kannel.sink.delivered
        meter = kannel_bench.KannelCpuMeter(kannel).start()
        started = time.monotonic()
        wrk = kannel_bench.start_wrk_get(
            kannel.sendsms_url(), clients, 60 + messages / 500, per_thread_limit=messages // 2
        )
        try:
            deadline = started + 60 + messages / 500
            while time.monotonic() < deadline and (
                stats()["accepted"] - first < messages
                or kannel.sink.delivered - delivered < messages
            ):
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            cores = meter.stop()
        finally:
            wrk.kill()
            wrk.wait()
            wrk.script.unlink(missing_ok=True)
        if kannel.sink.delivered - delivered < messages:
            raise RuntimeError(f"only {kannel.sink.delivered - delivered} receipts called back")
    rate = messages / elapsed
    processes = sum(cores.get(name, 0.0) for name in KANNEL_PROCESSES)
    return {
        "msg_per_s": round(rate, 1),
        "seconds": round(elapsed, 2),
        "messages": messages,
        "cpu_ms_per_msg": round(1000 * processes / rate, 3),
        "cpu_cores": cores,
    }


# --- ours ----------------------------------------------------------------------------------


def our_points(setup: str, clients: list[int], seconds: float) -> dict:
    """Every mode at every client count, on one started stack of ``setup``."""
    results: dict = {}
    stack = Stack(setup).prepare()
    try:
        stack.start(FAST_SMSC, spread="hash")  # wrk connects all at once
        for count in clients:
            for mode, extra in MODES.items():
                key = f"{mode}@{count}"
                try:
                    results[key] = our_point(stack, SEND_BODY + extra, count, seconds)
                except Exception as exc:  # one broken point must not hide the others
                    results[key] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"[{setup}] {key}: {brief(results[key])}")
    finally:
        stack.close()
    return results


def our_point(stack: Stack, body: str, clients: int, seconds: float) -> dict:
    settle(stack.simulator)  # the previous point's messages and receipts all through
    url, threads = stack.base_url + "/v1/send", min(2, clients)  # wrk: threads <= connections
    run_wrk(url, body, clients, min(WARM_UP_SECONDS, seconds), threads)
    meter = CpuMeter(stack).start()
    figures = run_wrk(url, body, clients, seconds, threads)
    return point(figures, meter.stop(), OUR_PROCESSES[stack.name])


def settle(simulator: Simulator, timeout: float = 60) -> None:
    """Until the SMSC has seen no new submit for 0.5 s and owes no receipt."""
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        stats = simulator.stats()
        if stats["accepted"] == last and not stats["receipts_pending"]:
            return
        last = stats["accepted"]
        time.sleep(0.5)


def our_end_to_end(setup: str, messages: int = E2E_MESSAGES) -> dict:
    stack = Stack(setup).prepare()
    try:
        result = end_to_end(stack, messages, clients=2, size=1000)
    finally:
        stack.close()
    cores = result["cpu_cores"]
    processes = sum(cores.get(name, 0.0) for name in OUR_PROCESSES[setup])
    result["cpu_ms_per_msg"] = round(1000 * processes / result["msg_per_s"], 3)
    return result


# --- the run -------------------------------------------------------------------------------


def one_round(
    parts: list[str], clients: list[int], seconds: float, kannel_ok: bool, messages: int
) -> dict:
    figures: dict = {}
    # Client count by client count, Kannel then ours: each ratio compares figures taken
    # within the same minute or two (the machine's speed drifts by a third in an hour).
    kannels = [("kannel", False), ("kannel_store", True)] if kannel_ok else []
    for count in clients:
        key = f"@{count}"
        for name, store_file in kannels:
            if name in parts:
                figures.setdefault(name, {})[key] = guarded(
                    kannel_point, count, seconds, store_file
                )
                log(f"[{name}] {key}: {brief(figures[name][key])}")
        for setup in ("embedded", "postgres"):
            if setup in parts:
                figures.setdefault(setup, {}).update(our_points(setup, [count], seconds))
    if "e2e" in parts:
        figures["e2e"] = {}
        if kannel_ok:
            figures["e2e"]["kannel"] = guarded(kannel_end_to_end, messages)
        for setup in ("embedded", "postgres"):
            if setup in parts or parts == ["e2e"]:
                figures["e2e"][setup] = guarded(our_end_to_end, setup, messages)
        log(f"[e2e] {json.dumps({k: brief(v) for k, v in figures['e2e'].items()})}")
    return figures


def guarded(function, *args) -> dict:
    try:
        return function(*args)
    except Exception as exc:  # one broken measurement must not hide the others
        return {"error": f"{type(exc).__name__}: {exc}"}


def brief(figures: dict) -> str:
    if "error" in figures:
        return figures["error"]
    keys = ("req_per_s", "to_smsc_per_s", "msg_per_s", "p50_ms", "p99_ms", "cpu_ms_per_msg")
    return ", ".join(f"{k} {figures[k]}" for k in keys if k in figures)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def mean_of_rounds(rounds: list[dict]) -> dict:
    """Each numeric figure's mean over the rounds that measured it without error."""

    def merge(values: list) -> object:
        values = [v for v in values if v is not None]
        if values and all(isinstance(v, dict) for v in values):
            good = [v for v in values if "error" not in v] or values[:1]
            keys = {k for v in good for k in v}
            return {k: merge([v.get(k) for v in good]) for k in sorted(keys, key=str)}
        if values and all(isinstance(v, int | float) for v in values):
            return round(statistics.fmean(values), 3)
        return values[0] if values else None

    return merge(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(PARTS), help="kannel, kannel_store, embedded, postgres, e2e"
    )
    parser.add_argument("--clients", default="1,20,100")
    parser.add_argument("--seconds", type=float, default=10, help="per measured point")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, one after the other")
    parser.add_argument("--e2e-messages", type=int, default=E2E_MESSAGES)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--table-from", help="print the tables of a JSON written before; no run")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        print(report.markdown(saved["mean"], clients, saved["kannel"]))
        return
    if not wrk_available():
        sys.exit("wrk is needed (apt-get install wrk), or run `make bench`")
    parts = [p for p in args.only.split(",") if p]
    wants_kannel = {"kannel", "kannel_store", "e2e"} & set(parts)
    kannel_problem = kannel_bench.ensure_kannel() if wants_kannel else ""
    if kannel_problem:
        log(f"NO KANNEL: {kannel_problem}; our figures only, without ratios")
    rounds = []
    for number in range(1, args.rounds + 1):
        log(f"--- round {number} of {args.rounds}")
        rounds.append(
            one_round(parts, clients, args.seconds, not kannel_problem, args.e2e_messages)
        )
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "kannel": kannel_bench.kannel_version() or kannel_problem,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds_per_point": args.seconds,
        "mean": mean_of_rounds(rounds),
        "rounds": rounds,
    }
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(report.markdown(results["mean"], clients, results["kannel"]))
    print(f"\n(figures of every round in {args.output})")


if __name__ == "__main__":
    main()
