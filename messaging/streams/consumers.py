"""The two WebSocket APIs: JSON-RPC for sending, and the event feed.

Both speak the JSON-RPC 1.0 envelope of the old server:
request ``{"method", "params": [{...}], "id"}``, response ``{"id", "result", "error"}``.

``/v1/ws/jsonrpc``: the client calls ``SM.Submit`` and ``SM.Query``. Each call
runs in its own task, so a slow submit does not hold up the others and answers
may come out of order (clients match them by id); at most
``JSONRPC_MAX_IN_FLIGHT`` at once, and the socket is not read while the client
does not read its answers (``messaging.streams.transport_flow``). Bad input gets an
error answer and counts against the key's rate; the socket stays open.

``/v1/ws/jsonrpc/events``: the server calls the client, ``SM.Deliver`` with one
event, ids from 0 per connection, and waits for the answer before the next
call. Events come from the store in id order, so a slow client only gets them
later, never fewer; a client silent for ``EVENTS_ACK_TIMEOUT`` seconds is
disconnected (close code 4008) and resumes with ``?since=<last event id>``.

With SMSAPI_AUTH=required both need an API key (``messaging.streams.ws_auth`` checks
it and puts it in ``scope["api_key"]``): calls then act for that key (its
messages, its rate limit) and the feed carries only its messages' events.
A key revoked while the socket is open closes it with 4401 within
``KEY_RECHECK_INTERVAL`` seconds (``messaging.streams.ws_auth.KeyWatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from messaging.api import json_input, querying, sending
from messaging.api.answers import ApiAnswer
from messaging.api.throttling import check_rate, rate_limit_text
from messaging.events import (
    EventCursor,
    InvalidParameter,
    event_data,
    parse_filter,
    parse_start,
)
from messaging.notify import EVENTS_GROUP, GROUP_RENEW_SECONDS, poll_interval
from messaging.orm_thread import in_db_thread
from messaging.streams.transport_flow import NO_FLOW, Flow, flow_for
from messaging.streams.ws_auth import CLOSE_UNAUTHORIZED, KeyWatch, stop_watching, watch_key

logger = logging.getLogger(__name__)

# Queries may wait seconds for the SMSC (query_sm): they get threads of their
# own, so that they neither queue behind each other nor starve the event readers.
RPC_THREADS = 32
_rpc_executor = ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="jsonrpc")

CLOSE_ACK_TIMEOUT = 4008  # like HTTP 408: the client did not answer in time
CLOSE_BAD_REQUEST = 4400  # like HTTP 400: the query string makes no sense
CLOSE_NOT_READING = 4008  # the client's buffer stayed full: it reads nothing
FEED_PAGE = 50  # events the events socket reads from the store at a time


async def drop_stalled(consumer: AsyncWebsocketConsumer, flow: Flow) -> None:
    """Close a socket whose client has read nothing for ``STREAM_STALL_TIMEOUT``
    seconds, and drop its connection with what was buffered for it."""
    logger.info("WebSocket client dropped: it read nothing for %ss", settings.STREAM_STALL_TIMEOUT)
    with contextlib.suppress(Exception):
        await consumer.close(code=CLOSE_NOT_READING)
    flow.abort()


def error_text(status: int, detail: str = "") -> str:
    """``"400 Bad Request: <detail>"``, the error string of a JSON-RPC answer."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{status} {phrase}: {detail}" if detail else f"{status} {phrase}"


async def _call_service(method: str, params: dict, api_key=None):
    """Run ``sending.send`` or ``querying.query`` within ``api_key``'s rate limit,
    like the HTTP API."""

    if api_key is not None and await in_db_thread(check_rate)(api_key) is not None:
        return ApiAnswer(429, {"error": rate_limit_text(api_key)})
    if method == "SM.Submit":
        return await sending.send(params, api_key=api_key)
    return await in_db_thread(querying.query, executor=_rpc_executor)(params, api_key=api_key)


METHODS = ("SM.Submit", "SM.Query")


class JsonRpcConsumer(AsyncWebsocketConsumer):
    """``/v1/ws/jsonrpc``: SM.Submit and SM.Query, answered concurrently.

    Bounded per socket: at most ``JSONRPC_MAX_IN_FLIGHT`` calls run at once, and
    an answer waits until the client's buffer has room. While either holds, the
    socket is not read (``TransportFlow.pause_reading``), so a client that sends
    without reading the answers is pushed back by TCP instead of growing the
    server; one that stays unreadable for ``STREAM_STALL_TIMEOUT`` is dropped
    (4008). A frame larger than ``JSONRPC_MAX_FRAME_BYTES``, malformed JSON,
    JSON nested too deep and an unknown method each get an error answer and
    count against the key's rate limit like a call.
    """

    async def connect(self) -> None:
        self.calls: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(max(1, settings.JSONRPC_MAX_IN_FLIGHT))
        self.api_key = self.scope.get("api_key")
        self.revoked = False
        self.flow = flow_for(self.base_send)
        self.key_watch = watch_key(self.api_key, self.on_revoked)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        stop_watching(self.key_watch)
        for task in self.calls:
            task.cancel()
        self.flow.release()

    def on_revoked(self) -> None:
        """The key was revoked: no call runs or is answered any more, the socket closes."""
        self.revoked = True
        for task in self.calls:
            task.cancel()
        self.closing = asyncio.ensure_future(self.close(code=CLOSE_UNAUTHORIZED))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.flow.limit_backlog()
        if self.revoked:
            return
        raw = text_data if text_data is not None else (bytes_data or b"")
        size = len(raw)
        if isinstance(raw, str) and size * 4 > settings.JSONRPC_MAX_FRAME_BYTES:
            size = len(raw.encode("utf-8"))  # only when it may be over: a copy of the frame
        if size > settings.JSONRPC_MAX_FRAME_BYTES:
            await self.refuse(
                None, 413, f"a frame of {size} bytes; at most {settings.JSONRPC_MAX_FRAME_BYTES}"
            )
            return
        try:
            request = json_input.loads(raw)
        except json_input.JsonInputError as exc:
            detail = str(exc).removeprefix("malformed JSON: ")
            await self.refuse(None, 400, f"invalid JSON: {detail}")
            return
        if not isinstance(request, dict):
            await self.refuse(None, 400, "invalid request: a JSON object expected")
            return
        call_id = request.get("id")
        method = request.get("method")
        params = request.get("params")
        if method not in METHODS:
            supported = ", ".join(METHODS)
            if isinstance(method, str):
                detail = f'unknown method "{method[:64]}"; supported: {supported}'
            else:
                detail = f'missing parameter "method"; supported: {supported}'
            await self.refuse(call_id, 400, detail)
            return
        if not (isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict)):
            await self.refuse(
                call_id, 400, 'invalid parameter "params": a list with one object expected'
            )
            return
        await self.take_slot()
        if self.revoked:
            self.slots.release()
            return
        task = asyncio.create_task(self.call(call_id, method, params[0]))
        self.calls.add(task)
        task.add_done_callback(self.call_done)

    async def take_slot(self) -> None:
        """A place among the calls in flight; the socket is not read while none is free."""
        if not self.slots.locked():
            await self.slots.acquire()
            return
        self.flow.pause_reading()
        try:
            await self.slots.acquire()
        finally:
            self.flow.resume_reading()

    def call_done(self, task: asyncio.Task) -> None:
        self.calls.discard(task)
        self.slots.release()

    async def call(self, call_id: Any, method: str, params: dict) -> None:
        try:
            answer = await _call_service(method, params, self.api_key)
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

    async def refuse(self, call_id: Any, status: int, detail: str) -> None:
        """Answer a frame that is no call; it counts against the key's rate limit."""
        if (
            self.api_key is not None
            and self.api_key.rate_limit
            and await in_db_thread(check_rate)(self.api_key) is not None
        ):
            status, detail = 429, rate_limit_text(self.api_key)
        await self.fail(call_id, status, detail)

    async def fail(self, call_id: Any, status: int, detail: str) -> None:
        await self.answer(call_id, error=error_text(status, detail))

    async def answer(self, call_id: Any, result: Any = None, error: str | None = None) -> None:
        if not await self.room():
            return
        await self.send(
            text_data=json.dumps(
                {"id": call_id, "result": result, "error": error},
                ensure_ascii=False,
                default=str,
            )
        )

    async def room(self) -> bool:
        """Whether an answer may be sent: waits (not reading) while the client's
        buffer is full; False, and the client dropped, when it stays full."""
        if self.revoked or self.flow.closed:
            return False
        if self.flow.writable:
            return True
        self.flow.pause_reading()
        try:
            has_room = await self.flow.wait_writable(settings.STREAM_STALL_TIMEOUT)
        finally:
            self.flow.resume_reading()
        if has_room:
            return not (self.revoked or self.flow.closed)
        await drop_stalled(self, self.flow)
        return False


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
        self.flow: Flow = NO_FLOW
        self.key_watch: KeyWatch | None = None
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
        self.flow = flow_for(self.base_send)
        self.key_watch = watch_key(self.scope.get("api_key"), self.on_revoked)
        self.feeder = asyncio.create_task(self.feed(cursor))

    def on_revoked(self) -> None:
        """The key was revoked: no more events, and the socket closes with 4401."""
        if self.feeder is not None:
            self.feeder.cancel()
        self.closing = asyncio.ensure_future(self.close(code=CLOSE_UNAUTHORIZED))

    async def join(self) -> None:
        if self.channel_layer is None:
            return
        try:
            await self.channel_layer.group_add(EVENTS_GROUP, self.channel_name)
            self.joined = True
        except Exception:  # polling alone still delivers everything
            logger.warning("events socket runs without bells", exc_info=True)

    async def disconnect(self, code: int) -> None:
        stop_watching(self.key_watch)
        if self.feeder is not None:
            self.feeder.cancel()
        self.flow.release()
        if self.joined:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(EVENTS_GROUP, self.channel_name)

    async def events_new(self, message: dict) -> None:
        """The bell: there are events after ``message["last_id"]``."""
        self.bell.set()

    async def feed(self, cursor: EventCursor) -> None:
        """Deliver events one call at a time, in id order, until the socket goes."""
        # A small page: the events wait here for their calls, one at a time.
        read = in_db_thread(functools.partial(cursor.read, FEED_PAGE))
        loop = asyncio.get_running_loop()
        joined_at = loop.time()
        timeout = settings.EVENTS_ACK_TIMEOUT
        while True:
            self.bell.clear()
            events = await read()
            for event in events:
                if not await self.deliver(event_data(event), timeout):
                    await self.close(code=CLOSE_ACK_TIMEOUT, reason="SM.Deliver not answered")
                    if not self.flow.writable:  # it reads nothing: not even the close
                        self.flow.abort()
                    return
            if events or cursor.more:
                continue  # more may be right behind, even after a page filtered out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bell.wait(), poll_interval())
            if loop.time() - joined_at > GROUP_RENEW_SECONDS:
                await self.join()
                joined_at = loop.time()

    async def deliver(self, data: dict, timeout: float) -> bool:
        """One SM.Deliver call; False when the client did not answer in time.

        One call in flight bounds what is buffered for the client; a client whose
        buffer is full all the same (it sends, never reads) gets nothing more.
        """
        if not await self.flow.wait_writable(timeout):
            return False
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
        self.flow.limit_backlog()
        raw = text_data if text_data is not None else (bytes_data or b"")
        if len(raw) > settings.JSONRPC_MAX_FRAME_BYTES:
            logger.info("events socket: a frame of %d characters ignored", len(raw))
            return
        try:
            reply = json_input.loads(raw)
        except json_input.JsonInputError:
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
