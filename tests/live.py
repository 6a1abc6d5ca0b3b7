"""Helpers for tests against a real server process: start daphne, read SSE, speak WebSocket.

The server runs in a subprocess on a socket the test bound itself (port 0, passed
with ``--fd``), against the test database of this pytest run, so the test can
write events with the store's own functions and the server reads them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def database_url() -> str:
    """A DATABASE_URL for the database this pytest run is using (its test database)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        from urllib.parse import quote

        user = quote(settings.get("USER") or "")
        password = quote(settings.get("PASSWORD") or "")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings.get("HOST") or "localhost"
        port = f":{settings['PORT']}" if settings.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{settings['NAME']}"
    raise RuntimeError(f"no live-server support for {connection.vendor}")


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@dataclass
class Server:
    """A daphne process serving ``smsapi.asgi:application``."""

    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def daphne(tmp_path: Path, **env: str) -> Iterator[Server]:
    """Run daphne until the block ends; ``env`` adds environment variables
    (the settings read the stream knobs from there)."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    log_path = tmp_path / f"daphne-{port}.log"
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "smsapi.settings",
        "DATABASE_URL": database_url(),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "daphne"),
                "--fd",
                str(sock.fileno()),
                "smsapi.asgi:application",
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[sock.fileno()],
        )
    sock.close()  # the child has its own copy
    server = Server(port=port, process=process, log_path=log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{server.log()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/v1/status")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not answer:\n{server.log()}")


# --- Server-Sent Events --------------------------------------------------------------


@dataclass
class SseEvent:
    id: str | None = None
    data: str = ""
    event: str | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict:
        return json.loads(self.data)


class SseClient:
    """Reads an SSE stream line by line, the way a browser's EventSource parses it."""

    def __init__(self, port: int, path: str, headers: dict | None = None, timeout: float = 10):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        self.comments: list[str] = []
        self.retry: str | None = None

    def _line(self) -> str:
        raw = self.response.readline()
        if not raw:
            raise EOFError("the stream ended")
        return raw.decode("utf-8").rstrip("\r\n")

    def next_block(self) -> SseEvent:
        """The next block (up to a blank line), comments and retry recorded on the side."""
        block = SseEvent()
        while True:
            line = self._line()
            if line == "":
                if block.lines:
                    return block
                continue
            block.lines.append(line)
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                block.id = value
            elif name == "data":
                block.data = f"{block.data}\n{value}" if block.data else value
            elif name == "event":
                block.event = value
            elif name == "retry":
                self.retry = value

    def next_event(self) -> SseEvent:
        """The next event with data (comments and retry lines are skipped)."""
        while True:
            block = self.next_block()
            if block.data:
                return block

    def events(self, count: int) -> list[SseEvent]:
        return [self.next_event() for _ in range(count)]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


# --- WebSocket ----------------------------------------------------------------------


class WebSocketClosed(Exception):
    def __init__(self, code: int | None, reason: str):
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    """A minimal RFC 6455 client: enough to speak JSON-RPC to a real server."""

    def __init__(self, port: int, path: str, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("no handshake answer")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status!r}")

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def send_json(self, value) -> None:
        self.send_text(json.dumps(value))

    def receive_text(self) -> str:
        """The next text message; raises WebSocketClosed on a close frame."""
        message = b""
        while True:
            first, second = self._exact(2)
            opcode = first & 0x0F
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._exact(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(size)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                with contextlib.suppress(OSError):
                    self._send_frame(0x8, payload[:2])
                raise WebSocketClosed(code, payload[2:].decode("utf-8", "replace"))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if first & 0x80:
                return message.decode("utf-8")

    def receive_json(self):
        return json.loads(self.receive_text())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self.sock.close()


# --- events in the store ----------------------------------------------------------------


def make_message(dst: str = "5550001", text: str = "hello"):
    """A stored message to hang receipt and status events on."""
    from django.utils import timezone

    from messaging.models import Message

    now = timezone.now()
    return Message.objects.create(
        dst=dst, text=text, encoding="gsm7", created_at=now, updated_at=now
    )


def add_events(count: int = 1, type_: str = "mo", message=None, ring: bool = True) -> list[int]:
    """Store ``count`` events in one transaction, the way the store does, and ring
    the bell after commit (unless ``ring`` is False); returns their ids in order."""
    from asgiref.sync import async_to_sync
    from django.db import transaction

    from messaging.event_payloads import message_status_payload
    from messaging.notify import publish
    from messaging.store import StoreChanges

    with transaction.atomic():
        changes = StoreChanges()
        for n in range(count):
            if type_ == "status":
                payload = message_status_payload(message, "delivered")
            else:
                payload = {
                    "type": type_,
                    "src": "5550001" if type_ == "receipt" else "5559999",
                    "dst": "smsapi",
                    "text": f"{type_} {n} ünïcode\nsecond line",
                }
                if message is not None:
                    payload.update(id=str(message.pk), message_id=f"smsc-{message.pk}")
            changes.event(type_, payload, message_id=message.pk if message else None)
        notifications = changes.flush()
        ids = [event.pk for event in changes.events]
    if ring:
        async_to_sync(publish)(notifications)
    return ids
