"""Clients that never read cannot grow the server: a real daphne process, its RSS measured.

Each test warms the server up, takes its resident memory, opens clients that
send but never read (tiny receive buffers, so the kernel holds little for
them), lets the server do what it will, and asserts that it grew by less than
``GROWTH_BOUND_MB``. The code before issue 18 grew without bound here: 30
silent SSE replays took it from 269 to 443 MB, one JSON-RPC flood from 112 to
258 MB (the figures measured with these tests are in docs/security.md).

Back-pressure rests on one private detail of daphne (``messaging.streams.transport_flow``):
``test_daphne_still_hands_its_protocol_in_send`` fails when upstream changes it.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import socket
import struct
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.utils import timezone

from messaging.models import Event
from messaging.streams.transport_flow import SUPPORTED_DAPHNE
from smsapi.asgi import application
from tests.live import SseClient, WsClient, daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

GROWTH_BOUND_MB = 50
SMALL_BUFFER = 4096  # the silent clients' socket buffers: the kernel keeps little for them


def test_daphne_still_hands_its_protocol_in_send():
    """``flow_for`` reads daphne's protocol out of ``send``: a new daphne must be checked."""
    version = metadata.version("daphne")
    assert version.startswith(tuple(f"{v}." for v in SUPPORTED_DAPHNE)), version
    # Read as text: importing daphne.server would install a Twisted reactor here.
    source = Path(importlib.util.find_spec("daphne.server").origin).read_text()
    assert "send=partial(self.handle_reply, protocol)" in source
    assert "async def handle_reply(self, protocol, message):" in source
    # ...and that a WebSocket protocol queues what it reads in ``application_queue``.
    ws_source = Path(importlib.util.find_spec("daphne.ws_protocol").origin).read_text()
    assert "self.application_queue.put_nowait(" in ws_source


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def settled_rss(pid: int, longest: float = 30.0) -> float:
    """The RSS once it stops rising (2 s without growing by 1 MB), or after ``longest``."""
    deadline = time.monotonic() + longest
    samples = [rss_mb(pid)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(rss_mb(pid))
        if len(samples) >= 5 and samples[-1] - samples[-5] < 1.0:
            break
    return max(samples)


def silent_socket(port: int) -> socket.socket:
    """A connection with tiny kernel buffers that will never be read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def store_history(count: int, text_size: int = 1000) -> list[int]:
    """``count`` events of about ``text_size`` characters each, in the store."""
    now = timezone.now()
    ids: list[int] = []
    text = "é" * text_size
    for start in range(0, count, 1000):
        with transaction.atomic():
            created = Event.objects.bulk_create(
                Event(
                    type="mo",
                    payload={"type": "mo", "src": "555", "dst": "smsapi", "text": f"{n} {text}"},
                    created_at=now,
                )
                for n in range(start, min(count, start + 1000))
            )
        ids += [event.pk for event in created]
    return ids


def warm_up(server, first_id: int | None = None) -> None:
    """Clients that read, so what every stream loads once is loaded before measuring."""
    if first_id is not None:
        sse = SseClient(server.port, f"/v1/sse?since={first_id - 1}")
        try:
            sse.events(300)
        finally:
            sse.close()
    ws = WsClient(server.port, "/v1/ws/jsonrpc")
    try:
        for n in range(50):
            ws.send_json({"method": "SM.Query", "params": [{"id": "1"}], "id": n})
        for _ in range(50):
            ws.receive_json()
    finally:
        ws.close()


def still_answers(server) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/v1/status")
        return conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.fixture
def history():
    return store_history(6000)


def test_silent_sse_replays_stay_bounded_and_are_dropped(history, tmp_path):
    """30 clients replay 6,000 events (about 7 MB each as SSE) and read none of it."""
    clients = 30
    with daphne(tmp_path, REDIS_URL="", STREAM_STALL_TIMEOUT="6") as server:
        warm_up(server, history[0])
        before = settled_rss(server.process.pid)
        socks = []
        try:
            for _ in range(clients):
                sock = silent_socket(server.port)
                sock.sendall(
                    f"GET /v1/sse?since={history[0] - 1} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
                )
                socks.append(sock)
            after = settled_rss(server.process.pid)
            grown = after - before
            print(f"SSE: {clients} silent replays: RSS {before:.0f} -> {after:.0f} MB")
            assert grown < GROWTH_BOUND_MB, f"grew {grown:.0f} MB"
            assert still_answers(server)
            # Past STREAM_STALL_TIMEOUT the server drops them: reading now ends in
            # EOF or a reset after what was in flight.
            time.sleep(8)
            dropped = sum(1 for sock in socks if reaches_end(sock))
            assert dropped == clients
        finally:
            for sock in socks:
                sock.close()


def reaches_end(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bool:
    """Read what the server had sent; True when the connection then ends."""
    received = 0
    try:
        while received < limit:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return True
            received += len(chunk)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def test_silent_events_sockets_stay_bounded(history, tmp_path):
    """30 events sockets replaying the whole history, never reading nor answering."""
    clients = 30
    with daphne(tmp_path, REDIS_URL="", EVENTS_ACK_TIMEOUT="3600") as server:
        warm_up(server, history[0])
        before = settled_rss(server.process.pid)
        socks = []
        try:
            for _ in range(clients):
                sock = silent_socket(server.port)
                sock.sendall(
                    f"GET /v1/ws/jsonrpc/events?since={history[0] - 1} HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                socks.append(sock)
            after = settled_rss(server.process.pid)
            print(f"events socket: {clients} silent clients: RSS {before:.0f} -> {after:.0f} MB")
            assert after - before < GROWTH_BOUND_MB
            assert still_answers(server)
        finally:
            for sock in socks:
                sock.close()


def test_jsonrpc_flood_without_reading_is_pushed_back(tmp_path):
    """One client sends up to 60,000 calls (66 MB) and reads no answer: the
    server stops reading it, and grows by less than the bound."""
    total = 60_000
    with daphne(tmp_path, REDIS_URL="", JSONRPC_MAX_IN_FLIGHT="32") as server:
        warm_up(server)
        before = settled_rss(server.process.pid)
        ws = WsClient(server.port, "/v1/ws/jsonrpc")
        # Tiny buffers from here on: what is not read stays with the server.
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        sent = flood(ws, total, seconds=20)
        try:
            after = settled_rss(server.process.pid)
            print(f"JSON-RPC flood: {sent} calls sent: RSS {before:.0f} -> {after:.0f} MB")
            assert sent < total, "the server read every call: nothing pushed back"
            assert after - before < GROWTH_BOUND_MB
            assert still_answers(server)
        finally:
            ws.sock.close()


def frame(text: str) -> bytes:
    """A client's text frame with a zero mask (allowed, and no per-byte work here)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", size)
    return head + b"\0\0\0\0" + payload


PADDING = "x" * 1000  # in each call's id, so echoed back in each answer


def query_frame(n: int, padding: str = PADDING) -> bytes:
    return frame(json.dumps({"method": "SM.Query", "params": [{"id": "1"}], "id": f"{n}{padding}"}))


def flood(ws: WsClient, total: int, seconds: float, batch: int = 50) -> int:
    """Send calls until ``total`` are sent or a send blocks for 3 s (the server
    stopped reading), at most ``seconds``; returns how many went out (the last
    batch may be cut: the socket is not used after a flood)."""
    ws.sock.settimeout(3)
    deadline = time.monotonic() + seconds
    sent = 0
    with contextlib.suppress(TimeoutError, OSError):
        while sent < total and time.monotonic() < deadline:
            count = min(batch, total - sent)
            ws.sock.sendall(b"".join(query_frame(n) for n in range(sent, sent + count)))
            sent += count
    return sent


def test_reading_resumes_once_the_client_reads(tmp_path):
    """Back-pressure is not a cut: a flooding client is held back while it reads
    nothing, and once it reads it gets an answer to every call it sent."""
    total, padding = 10_000, "y" * 4000  # 40 MB of calls and of answers: past the kernel's buffers
    with daphne(tmp_path, REDIS_URL="") as server:
        ws = WsClient(server.port, "/v1/ws/jsonrpc", timeout=60)
        progress = {"sent": 0}

        def send_all() -> None:
            for start in range(0, total, 100):  # a timeout per batch, not for all 40 MB
                ws.sock.sendall(
                    b"".join(query_frame(n, padding) for n in range(start, start + 100))
                )
                progress["sent"] = start + 100

        sender = threading.Thread(target=send_all)
        try:
            sender.start()
            sender.join(5)
            assert sender.is_alive(), "40 MB went out unread: nothing pushed back"
            held_at = progress["sent"]
            assert held_at < total
            answers = [ws.receive_json() for _ in range(total)]
            sender.join(60)
            assert progress["sent"] == total
            assert sorted(a["id"] for a in answers) == sorted(f"{n}{padding}" for n in range(total))
            assert all(a["error"] == '404 Not Found: message "1" not found' for a in answers)
        finally:
            ws.sock.close()


# --- JSON-RPC frames, in process ---------------------------------------------------------

RPC = "/v1/ws/jsonrpc"


async def open_rpc() -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, RPC)
    assert (await ws.connect())[0]
    return ws


async def test_deep_nesting_gets_an_error_answer_not_a_close():
    ws = await open_rpc()
    try:
        for frame in ("[" * 60_000, '{"a":' * 40 + "1" + "}" * 40):
            await ws.send_to(text_data=frame)
            answer = await ws.receive_json_from(timeout=10)
            assert answer["id"] is None and answer["result"] is None
            assert answer["error"].startswith("400 Bad Request: invalid JSON: ")
            assert "nested deeper than" in answer["error"]
        await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": 2})
        assert (await ws.receive_json_from(timeout=10))["id"] == 2  # still open
    finally:
        await ws.disconnect()


async def test_an_oversize_frame_is_answered_413(settings):
    settings.JSONRPC_MAX_FRAME_BYTES = 1000
    frame = '{"method": "SM.Query", "params": [{"x": "%s"}]}' % ("é" * 600)
    size = len(frame.encode())
    ws = await open_rpc()
    try:
        await ws.send_to(text_data=frame)
        answer = await ws.receive_json_from(timeout=10)
        assert answer == {
            "id": None,
            "result": None,
            "error": f"413 Request Entity Too Large: a frame of {size} bytes; at most 1000",
        }
    finally:
        await ws.disconnect()


async def test_calls_in_flight_are_capped(settings):
    """With two places, a quick query sent behind four slow submits waits for a
    place (without the cap it is answered first, see test_websocket). The socket is
    not read while both places are taken, so the query gets the third place to
    free: it is answered after three of the submits, whichever end first."""
    settings.JSONRPC_MAX_IN_FLIGHT = 2
    ws = await open_rpc()
    try:
        slow = {"dst": "5550001", "text": "slow", "wait": "1"}  # no worker: waits its second
        for n in range(4):
            await ws.send_json_to({"method": "SM.Submit", "params": [slow], "id": f"slow{n}"})
        await ws.send_json_to({"method": "SM.Query", "params": [{"id": "1"}], "id": "fast"})
        order = [(await ws.receive_json_from(timeout=20))["id"] for _ in range(5)]
        assert order.index("fast") >= 3
        assert set(order) == {"slow0", "slow1", "slow2", "slow3", "fast"}
    finally:
        await ws.disconnect()
