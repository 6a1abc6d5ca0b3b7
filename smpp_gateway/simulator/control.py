"""A tiny HTTP/JSON control port, for a simulator running in another process.

Plain asyncio, one request per connection (``Connection: close``):

- ``GET /stats``                   counters and gauges, as ``SMSCSimulator.stats()``
- ``GET /config``                  the current settings
- ``POST /config``                 ``{"error_rate": 0.1, ...}`` -> the new settings
- ``POST /mo``                     ``{"src", "dst", "text", "encoding", "split", "out_of_order",
                                   "system_id"}`` -> ``{"parts": n}``
- ``GET /submits?since=N&limit=M`` accepted submits from index N, short_message in hex,
                                   ``{"submits": [...], "next": index to ask for next}``
- ``POST /unbind``                 the SMSC sends unbind to every session
- ``POST /reset``                  forget counters and recorded submits
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from smpp_gateway.simulator.server import SMSCSimulator

log = logging.getLogger("smpp_gateway.simulator")

MAX_BODY = 1024 * 1024
READ_TIMEOUT = 10.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
MO_FIELDS = ("src", "dst", "text", "encoding", "split", "out_of_order", "system_id")


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ControlServer:
    """Serves the routes above for one simulator, on the simulator's event loop."""

    def __init__(self, sim: SMSCSimulator):
        self.sim = sim
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, target, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
                status, payload = 200, self.route(method, target, body)
            except HTTPError as exc:
                status, payload = exc.status, {"error": str(exc)}
            except (ValueError, TypeError) as exc:
                status, payload = 400, {"error": str(exc)}
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def route(self, method: str, target: str, body: bytes) -> Any:
        """Answer one request; raises ``HTTPError`` or ``ValueError`` for a bad one."""
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        routes = {
            ("GET", "/stats"): lambda: self.sim.stats(),
            ("GET", "/config"): lambda: self.sim.config.as_dict(),
            ("POST", "/config"): lambda: self.sim.set_config(**_json_object(body)).as_dict(),
            ("POST", "/mo"): lambda: {"parts": self._inject_mo(_json_object(body))},
            ("GET", "/submits"): lambda: self._submits(parse_qs(url.query)),
            ("POST", "/unbind"): lambda: {"unbound": self.sim.unbind_all()},
            ("POST", "/reset"): lambda: self._reset(),
        }
        handler = routes.get((method, path))
        if handler is None:
            if any(route_path == path for _, route_path in routes):
                raise HTTPError(405, f"{method} not allowed on {path}")
            raise HTTPError(404, f"no such route: {path}")
        return handler()

    def _inject_mo(self, data: dict[str, Any]) -> int:
        unknown = set(data) - set(MO_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        for name in ("src", "dst", "text"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"{name} is required (a string)")
        return self.sim.inject_mo(**data)

    def _submits(self, query: dict[str, list[str]]) -> dict[str, Any]:
        since = int(query.get("since", ["0"])[0])
        limit = int(query.get("limit", ["10000"])[0])
        records = self.sim.submits_since(since, limit)
        next_index = records[-1].index + 1 if records else max(since, self.sim.next_index)
        return {"submits": [r.as_json() for r in records], "next": next_index}

    def _reset(self) -> dict[str, bool]:
        self.sim.reset()
        return {"reset": True}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _ = lines[0].split(" ", 2)
    except ValueError as exc:
        raise HTTPError(400, "bad request line") from exc
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > MAX_BODY:
        raise HTTPError(400, "body too large")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target, body


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data
