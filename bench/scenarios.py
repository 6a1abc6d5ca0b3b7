"""The six measurements of issue 7 (and issue 24's two connectors), each on a fresh store.

Every scenario takes a prepared ``Stack`` (store migrated, nothing running),
starts the service with the simulator settings it needs, measures, and stops
it. Loops are bounded in count and in time, and only talk to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time

from bench.load import HttpConnection, SSEListener, percentile, run_wrk
from bench.services import PYTHON, ROOT, CpuMeter, Simulator, Stack, cpu_seconds, peak_rss_mb

FAST_SMSC = {"receipt_delay": 0.0, "record_limit": 200_000}
SEND_BODY = "src=bench&dst=5511900000001&text=hello+from+the+bench"


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


# --- 1 and 2: /v1/send at 20 concurrent clients ---------------------------------------


def measure_wrk(
    stack: Stack, path: str, body: str, connections: int, seconds: float
) -> tuple[dict, dict[str, float]]:
    """wrk's figures for ``path`` on a started stack, after a 2 s warm-up, and the
    cores each part of the set-up used meanwhile."""
    url = stack.base_url + path
    run_wrk(url, body, connections, seconds=2)  # warm up: imports, connections, caches
    meter = CpuMeter(stack).start()
    figures = run_wrk(url, body, connections, seconds=seconds)
    return figures, meter.stop()


def send_requests(stack: Stack, wait: bool, seconds: float, connections: int = 20) -> dict:
    """POST /v1/send from ``connections`` clients; with ``wait`` the default wait for the SMSC."""
    stack.start(FAST_SMSC, spread="hash")  # wrk connects all at once
    try:
        body = SEND_BODY if wait else SEND_BODY + "&wait=0"
        figures, cpu = measure_wrk(stack, "/v1/send", body, connections, seconds)
    finally:
        stack.stop_service()
    return {
        "req_per_s": round(figures["req_per_s"], 1),
        "p50_ms": round(figures["p50_us"] / 1000, 2),
        "p99_ms": round(figures["p99_us"] / 1000, 2),
        "requests": figures["requests"],
        "errors": figures["errors"],
        "cpu_cores": cpu,
    }


# --- 3: batch ingest ------------------------------------------------------------------------


def batch_items(prefix: str, start: int, stop: int, text_length: int = 0) -> list[dict]:
    """Send objects ``prefix-start`` ... ``prefix-(stop - 1)``, one unique text each,
    padded to ``text_length`` characters if that is longer. Handsets are numbered
    by place in the batch: every batch goes to the same ones."""
    texts = [f"{prefix}-{n}" for n in range(start, stop)]
    if text_length:
        texts = [f"{text} ".ljust(text_length, "x") for text in texts]
    return [{"src": "bench", "dst": f"55119{n:08d}", "text": t} for n, t in enumerate(texts)]


def batch_bodies(
    prefix: str, count: int, size: int, text_length: int = 0
) -> list[tuple[list[str], bytes]]:
    """JSON bodies of ``size`` messages each (``batch_items``), with their texts."""
    bodies = []
    for start in range(0, count, size):
        items = batch_items(prefix, start, min(count, start + size), text_length)
        bodies.append(([item["text"] for item in items], json.dumps(items).encode()))
    return bodies


async def post_batches(
    port: int, bodies: list[tuple[list[str], bytes]], clients: int
) -> tuple[dict[str, float], float]:
    """POST every body from ``clients`` connections; returns text -> post time, and seconds."""
    queue = list(reversed(bodies))
    posted: dict[str, float] = {}
    failures: list[str] = []

    async def client() -> None:
        while queue:
            texts, body = queue.pop()
            sent_at = time.time()
            # A connection per batch, as from many senders: with a few kept-alive
            # connections the figure depended on how they fell on the daphne processes
            # (all on one: a third less); a new one goes to the process that accepts first.
            connection = await HttpConnection(port).open()
            try:
                status, answer = await connection.request("POST", "/v1/send/batch", body)
            finally:
                await connection.close()
            if status != 200 or json.loads(answer)["accepted"] != len(texts):
                failures.append(f"{status} {answer[:200]!r}")
                continue
            posted.update(dict.fromkeys(texts, sent_at))

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - started
    if failures:
        raise RuntimeError(f"{len(failures)} batches refused, first: {failures[0]}")
    return posted, elapsed


def batch_ingest(
    stack: Stack, messages: int, clients: int = 4, size: int = 1000, text_length: int = 0
) -> dict:
    """``messages`` posted in batches of ``size``; long texts (``text_length``)
    also count the parts they were cut into."""
    stack.start(FAST_SMSC)
    try:
        warm_up = batch_bodies("warm", 2 * size, size, text_length)
        asyncio.run(post_batches(stack.http_port, warm_up, clients))
        bodies = batch_bodies("ingest", messages, size, text_length)
        meter = CpuMeter(stack).start()
        posted, elapsed = asyncio.run(post_batches(stack.http_port, bodies, clients))
        cpu = meter.stop()
        parts = stack.scalar("SELECT count(*) FROM messaging_messagepart")
        stored = stack.scalar("SELECT count(*) FROM messaging_message")
    finally:
        stack.stop_service()
    figures = {"msg_per_s": round(len(posted) / elapsed, 1), "messages": len(posted)}
    if text_length:
        figures["parts_per_s"] = round(figures["msg_per_s"] * parts / stored, 1)
    return {**figures, "cpu_cores": cpu}


# --- 4: end to end ---------------------------------------------------------------------------


def end_to_end(stack: Stack, messages: int, clients: int = 2, size: int = 1000) -> dict:
    """Batches in, until the last receipt event has reached a connected SSE client."""
    stack.start(FAST_SMSC)
    try:
        meter = CpuMeter(stack).start()
        result = asyncio.run(_end_to_end(stack, messages, clients, size))
        result["cpu_cores"] = meter.stop()
        submits = stack.simulator.submits()
        stored = dict(stack.rows(_RECEIPT_EVENTS_PG if stack.postgres else _RECEIPT_EVENTS_SQLITE))
    finally:
        stack.stop_service()
    posted = result.pop("posted")
    arrived = result.pop("arrived")
    to_wire, to_sse, to_store, store_to_sse = [], [], [], []
    for record in submits:
        text = bytes.fromhex(record["short_message"]).decode("latin-1")
        if text in posted:
            to_wire.append(record["received_at"] - posted[text])
        smsc_id = record["id_str"]
        if smsc_id in arrived and record["final_at"]:
            to_sse.append(arrived[smsc_id] - record["final_at"])
            if smsc_id in stored:  # where the time went: the worker, or the stream
                to_store.append(stored[smsc_id] - record["final_at"])
                store_to_sse.append(arrived[smsc_id] - stored[smsc_id])
    result.update(
        receipt_to_store_p50_ms=round(percentile(to_store, 0.5) * 1000, 1),
        receipt_to_store_p99_ms=round(percentile(to_store, 0.99) * 1000, 1),
        store_to_sse_p50_ms=round(percentile(store_to_sse, 0.5) * 1000, 1),
        store_to_sse_p99_ms=round(percentile(store_to_sse, 0.99) * 1000, 1),
    )
    result.update(
        post_to_submit_p50_ms=round(percentile(to_wire, 0.5) * 1000, 1),
        post_to_submit_p99_ms=round(percentile(to_wire, 0.99) * 1000, 1),
        receipt_to_sse_p50_ms=round(percentile(to_sse, 0.5) * 1000, 1),
        receipt_to_sse_p99_ms=round(percentile(to_sse, 0.99) * 1000, 1),
    )
    return result


async def _end_to_end(stack: Stack, messages: int, clients: int, size: int) -> dict:
    listener = SSEListener(stack.http_port).start()
    await asyncio.wait_for(listener.connected.wait(), 10)
    await asyncio.sleep(0.5)
    bodies = batch_bodies("e2e", messages, size)
    first_post = time.time()
    posted, post_seconds = await post_batches(stack.http_port, bodies, clients)
    deadline = time.monotonic() + max(120, messages / 200)
    while len(listener.receipts) < messages and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await listener.stop()
    arrived = dict(listener.receipts)
    if len(arrived) < messages:
        raise RuntimeError(f"only {len(arrived)} of {messages} receipts reached the SSE client")
    elapsed = max(arrived.values()) - first_post
    return {
        "msg_per_s": round(messages / elapsed, 1),
        "seconds": round(elapsed, 2),
        "messages": messages,
        "post_seconds": round(post_seconds, 2),
        "posted": posted,
        "arrived": arrived,
    }


# Receipt events as stored: the SMSC id and when the worker wrote them (epoch seconds).
_RECEIPT_EVENTS_PG = (
    "SELECT payload->>'message_id', EXTRACT(EPOCH FROM created_at)::float "
    "FROM messaging_event WHERE type = 'receipt'"
)
_RECEIPT_EVENTS_SQLITE = (
    "SELECT json_extract(payload, '$.message_id'), "
    "(julianday(created_at) - 2440587.5) * 86400.0 FROM messaging_event WHERE type = 'receipt'"
)


# --- 5: a slow SMSC with a window of 100 ----------------------------------------------------


def window_bound(stack: Stack, seconds: float, delay: float = 0.05, window: int = 100) -> dict:
    """Queued messages to an SMSC answering in ``delay`` s, ``window`` in flight at most."""
    bound = window / delay
    load_queued(stack, int(bound * (seconds + 15)))
    smsc = {**FAST_SMSC, "response_delay": delay, "max_window": window}
    stack.start(smsc, SMPP_WINDOW=str(window))
    try:
        stats = stack.simulator.stats
        wait_for(lambda: stats()["accepted"] > bound, timeout=30)  # past the start
        time.sleep(1)
        meter = CpuMeter(stack).start()
        first, started = stats(), time.monotonic()
        time.sleep(seconds)
        last, elapsed = stats(), time.monotonic() - started
        cpu = meter.stop()
    finally:
        stack.stop_service()
    rate = (last["accepted"] - first["accepted"]) / elapsed
    return {
        "msg_per_s": round(rate, 1),
        "bound_per_s": bound,
        "share": round(rate / bound, 3),
        "window_violations": last["window_violations"],
        "max_outstanding_seen": last["max_outstanding_seen"],
        "cpu_cores": cpu,
    }


def two_connectors_bound(
    stack: Stack, seconds: float, delay: float = 0.05, window: int = 100, workers: int = 1
) -> dict:
    """Issue 24: queued messages split between two connectors, each an SMSC answering in
    ``delay`` s with ``window`` in flight; the bound is the sum of theirs. With
    ``workers`` > 1 (PostgreSQL), that many worker processes share the two binds."""
    bound = 2 * window / delay
    load_queued(stack, int(bound * (seconds + 15)))
    # Every other message waits for the second connector (the route's choice, as stored).
    stack.sql(["UPDATE messaging_message SET connector = 'second' WHERE id % 2 = 0"])
    smsc = {**FAST_SMSC, "response_delay": delay, "max_window": window}
    second = Simulator(stack.env, stack.tmp).start(**smsc)
    try:
        subprocess.run(
            [
                PYTHON,
                "manage.py",
                "connectors",
                "add",
                "second",
                "--host",
                "127.0.0.1",
                "--port",
                str(second.port),
                "--system-id",
                "smsapi",
                "--password-env",
                "BENCH_SMSC_PASSWORD",
                "--window",
                str(window),
            ],
            cwd=ROOT,
            env={**stack.env, "BENCH_SMSC_PASSWORD": "secret"},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        stack.start(smsc, SMPP_WINDOW=str(window), SMPP_CONNECTOR_RELOAD="0.5")
        for _ in range(workers - 1):
            stack.add_worker()
        try:

            def accepted() -> int:
                return stack.simulator.stats()["accepted"] + second.stats()["accepted"]

            wait_for(lambda: accepted() > bound, timeout=30)  # past the start
            time.sleep(1 if workers == 1 else 5)  # binds spread between the workers
            meter = CpuMeter(stack).start()
            first, started = accepted(), time.monotonic()
            each_first = second.stats()["accepted"]
            time.sleep(seconds)
            last, elapsed = accepted(), time.monotonic() - started
            through_second = second.stats()["accepted"] - each_first
            cpu = meter.stop()
            violations = (
                stack.simulator.stats()["window_violations"] + second.stats()["window_violations"]
            )
        finally:
            stack.stop_service()
    finally:
        second.stop()
    rate = (last - first) / elapsed
    return {
        "msg_per_s": round(rate, 1),
        "bound_per_s": bound,
        "share": round(rate / bound, 3),
        "second_connector_share": round(through_second / max(1, last - first), 3),
        "window_violations": violations,
        "workers": workers,
        "cpu_cores": cpu,
    }


# --- 6: memory with a million messages queued -----------------------------------------------


def memory_with_queue(stack: Stack, queued: int, seconds: float) -> dict:
    """Peak RSS of the server(s) and the worker while a million queued messages are sent."""
    load_queued(stack, queued)
    stack.start(FAST_SMSC, spread="hash")  # wrk connects all at once
    try:
        worker_cpu = cpu_seconds(stack.worker_pid)
        meter = CpuMeter(stack).start()
        wrk = threading.Thread(
            target=lambda: run_wrk(stack.base_url + "/v1/send", SEND_BODY + "&wait=0", 20, 10),
            daemon=True,
        )
        wrk.start()  # the server busy too, while the worker works through the queue
        time.sleep(seconds)
        wrk.join(30)
        sent = stack.simulator.stats()["accepted"]
        figures = {
            "queued": queued,
            "server_peak_rss_mb": round(max(peak_rss_mb(p) for p in stack.server_pids), 1),
            "worker_peak_rss_mb": round(peak_rss_mb(stack.worker_pid), 1),
            "sent_meanwhile": sent,
            "worker_cpu_s": round(cpu_seconds(stack.worker_pid) - worker_cpu, 1),
            "cpu_cores": meter.stop(),
        }
    finally:
        stack.stop_service()
    return figures


def load_queued(stack: Stack, count: int, chunk: int = 100_000) -> None:
    """Queue ``count`` one-part messages straight in the store, as the API would store them."""
    now = "now()" if stack.postgres else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    for start in range(0, count, chunk):
        end = min(count, start + chunk)
        if stack.postgres:
            numbers = f"generate_series({start + 1}, {end}) AS g(n)"
            prefix = ""
        else:
            prefix = (
                f"WITH RECURSIVE g(n) AS (SELECT {start + 1} UNION ALL "
                f"SELECT n + 1 FROM g WHERE n < {end}) "
            )
            numbers = "g"
        blob = "convert_to(m.text, 'UTF8')" if stack.postgres else "CAST(m.text AS BLOB)"
        false = "false" if stack.postgres else "0"
        since = stack.scalar("SELECT COALESCE(MAX(id), 0) FROM messaging_message")
        stack.sql(
            [
                "INSERT INTO messaging_message (src, src_ton, src_npi, dst, dst_ton, dst_npi, "
                "text, encoding, requested_encoding, data_coding, ucs2_forced_by, parts_count, "
                "register, priority, reference, callback_url, request_hash, state, "
                "possibly_duplicated, notify_channel, created_at, updated_at, connector) "
                f"{prefix}SELECT 'bench', 0, 0, '55' || n, 0, 0, 'queued-' || n, 'gsm7', "
                f"'auto', 0, '', 1, 'final', 0, '', '', '', 'queued', {false}, '', {now}, {now}, "
                f"'' FROM {numbers}",
                'INSERT INTO messaging_messagepart (message_id, "index", short_message, '
                "esm_class, use_payload, state, next_attempt_at, worker, attempts, bind_id, "
                f"possibly_duplicated, connector) SELECT m.id, 1, {blob}, 0, {false}, 'queued', "
                f"{now}, '', 0, '', {false}, '' FROM messaging_message m WHERE m.id > {since}",
                "INSERT INTO messaging_statetransition (message_id, from_state, to_state, "
                f"detail, at) SELECT m.id, '', 'queued', 'stored', {now} "
                f"FROM messaging_message m WHERE m.id > {since}",
            ]
        )
