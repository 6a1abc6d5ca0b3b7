"""The two WebSocket APIs: JSON-RPC for sending, and the event feed.

Both speak the JSON-RPC 1.0 envelope of the old server:
request ``{"method", "params": [{...}], "id"}``, response ``{"id", "result", "error"}``.

``/v1/ws/jsonrpc``: the client calls ``SM.Submit`` and ``SM.Query``. Each call
runs in its own task, so a slow submit does not hold up the others and answers
may come out of order (clients match them by id). Bad input gets an error
answer; the socket stays open.

``/v1/ws/jsonrpc/events``: the server calls the client, ``SM.Deliver`` with one
event, ids from 0 per connection, and waits for the answer before the next
call. Events come from the store in id order, so a slow client only gets them
later, never fewer; a client silent for ``EVENTS_ACK_TIMEOUT`` seconds is
disconnected (close code 4008) and resumes with ``?since=<last event id>``.

With SMSAPI_AUTH=required both need an API key (``messaging.ws_auth`` checks
it and puts it in ``scope["api_key"]``): calls then act for that key (its
messages, its rate limit) and the feed carries only its messages' events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from .events import (
    EventCursor,
    InvalidParameter,
    event_data,
    in_db_thread,
    parse_filter,
    parse_start,
)
from .notify import EVENTS_GROUP
from .sse import GROUP_RENEW_SECONDS, poll_interval

logger = logging.getLogger(__name__)

# Queries may wait seconds for the SMSC (query_sm): they get threads of their
# own, so that they neither queue behind each other nor starve the event readers.
RPC_THREADS = 32
_rpc_executor = ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="jsonrpc")

CLOSE_ACK_TIMEOUT = 4008  # like HTTP 408: the client did not answer in time
CLOSE_BAD_REQUEST = 4400  # like HTTP 400: the query string makes no sense


def error_text(status: int, detail: str = "") -> str:
    """``"400 Bad Request: <detail>"``, the error string of a JSON-RPC answer."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{status} {phrase}: {detail}" if detail else f"{status} {phrase}"


async def _call_service(method: str, params: dict, api_key=None):
    """Run a method of ``messaging.sending`` (imported late: it loads DRF serializers),
    within ``api_key``'s rate limit like the HTTP API."""
    from . import sending
    from .throttling import check_rate, rate_limit_text

    if api_key is not None and await in_db_thread(check_rate)(api_key) is not None:
        return sending.ApiAnswer(429, {"error": rate_limit_text(api_key)})
    if method == "SM.Submit":
        return await sending.send(params, api_key=api_key)
    return await in_db_thread(sending.query, executor=_rpc_executor)(params, api_key=api_key)


METHODS = ("SM.Submit", "SM.Query")


class JsonRpcConsumer(AsyncWebsocketConsumer):
    """``/v1/ws/jsonrpc``: SM.Submit and SM.Query, answered concurrently."""

    async def connect(self) -> None:
        self.calls: set[asyncio.Task] = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for task in self.calls:
            task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"")
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            await self.fail(None, 400, f"invalid JSON: {exc}")
            return
        if not isinstance(request, dict):
            await self.fail(None, 400, "invalid request: a JSON object expected")
            return
        call_id = request.get("id")
        method = request.get("method")
        params = request.get("params")
        if method not in METHODS:
            supported = ", ".join(METHODS)
            if isinstance(method, str):
                await self.fail(call_id, 400, f'unknown method "{method}"; supported: {supported}')
            else:
                await self.fail(call_id, 400, f'missing parameter "method"; supported: {supported}')
            return
        if not (isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict)):
            await self.fail(
                call_id, 400, 'invalid parameter "params": a list with one object expected'
            )
            return
        task = asyncio.create_task(self.call(call_id, method, params[0]))
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def call(self, call_id: Any, method: str, params: dict) -> None:
        try:
            answer = await _call_service(method, params, self.scope.get("api_key"))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed", method)
            await self.fail(call_id, 500, "the call failed; see the server log")
            return
        if 200 <= answer.status < 300:
            await self.answer(call_id, result=answer.body)
        else:
            await self.fail(call_id, answer.status, str(answer.body.get("error", "")))

    async def fail(self, call_id: Any, status: int, detail: str) -> None:
        await self.answer(call_id, error=error_text(status, detail))

    async def answer(self, call_id: Any, result: Any = None, error: str | None = None) -> None:
        await self.send(
            text_data=json.dumps(
                {"id": call_id, "result": result, "error": error},
                ensure_ascii=False,
                default=str,
            )
        )


class EventsConsumer(AsyncWebsocketConsumer):
    """``/v1/ws/jsonrpc/events[?since=<event id>][&type=...][&id=<message id>]``.

    The client answers each ``SM.Deliver`` with ``{"id": N, "result": ..., "error": null}``.
    Any answer with the call's id lets the next event go; an answer carrying an
    error is logged (the client saw the event and said so; it stays in the
    store and can be had again with ``?since``).
    """

    async def connect(self) -> None:
        self.call_id = 0
        self.waiting: tuple[int, asyncio.Future] | None = None
        self.bell = asyncio.Event()
        self.feeder: asyncio.Task | None = None
        self.joined = False
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            start = parse_start(_first(query, "since"), "since")
            event_filter = parse_filter(_first(query, "type"), _first(query, "id")).owned_by(
                self.scope.get("api_key")
            )
        except InvalidParameter as exc:
            await self.accept()
            await self.close(code=CLOSE_BAD_REQUEST, reason=str(exc)[:120])
            return
        # Subscribed and placed before the handshake completes: once the client
        # is connected, every event stored from then on is one it will get.
        await self.join()
        cursor = EventCursor(start, event_filter)
        await in_db_thread(cursor.begin)()
        await self.accept()
        self.feeder = asyncio.create_task(self.feed(cursor))

    async def join(self) -> None:
        if self.channel_layer is None:
            return
        try:
            await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
            self.joined = True
        except Exception:  # polling alone still delivers everything
            logger.warning("events socket runs without bells", exc_info=True)

    async def disconnect(self, code: int) -> None:
        if self.feeder is not None:
            self.feeder.cancel()
        if self.joined:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(EVENTS_GROUP, self.channel_name)

    async def events_new(self, message: dict) -> None:
        """The bell: there are events after ``message["last_id"]``."""
        self.bell.set()

    async def feed(self, cursor: EventCursor) -> None:
        """Deliver events one call at a time, in id order, until the socket goes."""
        read = in_db_thread(cursor.read)
        loop = asyncio.get_running_loop()
        joined_at = loop.time()
        timeout = settings.EVENTS_ACK_TIMEOUT
        while True:
            self.bell.clear()
            events = await read()
            for event in events:
                if not await self.deliver(event_data(event), timeout):
                    await self.close(code=CLOSE_ACK_TIMEOUT, reason="SM.Deliver not answered")
                    return
            if events:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bell.wait(), poll_interval())
            if loop.time() - joined_at > GROUP_RENEW_SECONDS:
                await self.join()
                joined_at = loop.time()

    async def deliver(self, data: dict, timeout: float) -> bool:
        """One SM.Deliver call; False when the client did not answer in time."""
        call_id = self.call_id
        self.call_id += 1
        answered = asyncio.get_running_loop().create_future()
        self.waiting = (call_id, answered)
        await self.send(
            text_data=json.dumps(
                {"method": "SM.Deliver", "params": [data], "id": call_id},
                ensure_ascii=False,
                default=str,
            )
        )
        try:
            reply = await asyncio.wait_for(answered, timeout)
        except TimeoutError:
            return False
        finally:
            self.waiting = None
        if reply.get("error") is not None:
            logger.info("client answered SM.Deliver %s with error %r", call_id, reply["error"])
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Answers to our calls; anything else is logged and ignored."""
        try:
            reply = json.loads(text_data if text_data is not None else (bytes_data or b""))
        except (ValueError, UnicodeDecodeError):
            logger.info("events socket: a message that is not JSON ignored")
            return
        if not isinstance(reply, dict) or self.waiting is None:
            return
        call_id, answered = self.waiting
        reply_id = reply.get("id")
        if (reply_id == call_id or str(reply_id) == str(call_id)) and not answered.done():
            answered.set_result(reply)


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
