"""Load generators: wrk for many small requests, a small asyncio client for the rest.

wrk (C, one event loop per thread) produces 20 concurrent clients' worth of
requests for a fraction of a core, so the figure is the server's, not the
load generator's. Batches and the SSE stream need a client that records
timings per message: ``HttpConnection`` and ``SSEListener`` are minimal
HTTP/1.1 over asyncio streams, enough for our own server on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = os.getenv("BENCH_BODY")

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, body: str, connections: int = 20, seconds: float = 10, threads: int = 2
) -> dict:
    """POST ``body`` (a form) to ``url`` from ``connections`` keep-alive clients."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        result = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                url,
            ],
            env={"BENCH_BODY": body, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        Path(script.name).unlink()
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    figures = json.loads(line[len("BENCH ") :])
    figures["req_per_s"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["errors"] = sum(
        figures[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return figures


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 (Content-Length or chunked bodies)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status, headers = await _read_head(self.reader)
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            return status, b"".join(chunks)
        return status, await self.reader.readexactly(int(headers.get("content-length", 0)))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip().lower()
    return status, headers


@dataclass
class SSEListener:
    """A client on GET /v1/sse that notes when each receipt event reaches it."""

    port: int
    receipts: dict[str, float] = field(default_factory=dict)  # SMSC id -> time.time()
    events: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    def start(self) -> SSEListener:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            b"GET /v1/sse?type=receipt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept: text/event-stream\r\n\r\n"
        )
        status, headers = await _read_head(reader)
        if status != 200:
            raise RuntimeError(f"GET /v1/sse answered {status}")
        chunked = headers.get("transfer-encoding") == "chunked"
        self.connected.set()
        buffer = b""
        try:
            while True:
                if chunked:
                    size = int((await reader.readline()).strip(), 16)
                    data = await reader.readexactly(size + 2)
                    data = data[:-2]
                    if size == 0:
                        return
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
                now = time.time()
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"data:"):
                        self.events += 1
                        payload = json.loads(line[5:])
                        if payload.get("type") == "receipt":
                            self.receipts.setdefault(payload.get("message_id", ""), now)
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` (0-1) of ``values`` lie (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
    return ordered[index]
