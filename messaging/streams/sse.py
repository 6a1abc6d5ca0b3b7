"""GET /v1/sse: the event log as Server-Sent Events, readable by a browser's EventSource.

A Django async view streaming from an async generator (Django cancels it when
the client goes away). Channels' AsyncHttpConsumer is not used: it does not
receive group messages while it streams (upstream #1302, #1747).

The stream replays from ``Last-Event-ID`` (what EventSource sends when it
reconnects) or ``?since=<event id>``, a page at a time and only as fast as the
client reads (``messaging.streams.transport_flow``), then goes on live. Every event comes from
the store in id order (``EventCursor``); the channel layer's bell only says
when to look, and the store is looked at every ``EVENTS_POLL_INTERVAL``
seconds anyway, because a bell can be lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from messaging.api.authentication import request_api_key, unauthorized
from messaging.api_keys import KeyRejected, auth_required
from messaging.event_payloads import link_payload_of
from messaging.events import (
    EventCursor,
    EventFilter,
    InvalidParameter,
    format_sse,
    format_sse_named,
    parse_filter,
    parse_start,
)
from messaging.models import ApiKey
from messaging.notify import EVENTS_GROUP, Doorbell, poll_interval
from messaging.orm_thread import in_db_thread
from messaging.streams.transport_flow import NO_FLOW, SEND_SCOPE_KEY, Flow, flow_for
from messaging.streams.ws_auth import KeyWatch, stop_watching, watch_key

logger = logging.getLogger(__name__)

LINK_GROUP = "link"  # the worker tells it when its SMPP bind changes
RETRY_MS = 3000  # how long a browser waits before reconnecting
# Events read from the store at a time: a replay is sent a page at a time, and
# the next page is read only once the client has room for it.
PAGE = 100
CHUNK = 32 * 1024  # characters of SSE text handed to the server at a time


def keepalive_interval() -> float:
    return settings.SSE_KEEPALIVE


class _ClientPace:
    """What one stream knows of its client: room in its buffer, its API key, and
    when it was last written to (for the keep-alives)."""

    def __init__(self, bell: Doorbell, flow: Flow, key_watch: KeyWatch | None) -> None:
        self.bell = bell
        self.flow = flow
        self.key_watch = key_watch
        self.stall_timeout = settings.STREAM_STALL_TIMEOUT
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()

    async def may_send(self) -> bool:
        """Wait for room in the client's buffer; False: end the stream."""
        if self.key_watch is not None and self.key_watch.revoked.is_set():
            logger.info("SSE stream ended: its API key was revoked")
            return False
        if not self.flow.writable and not await self.flow.wait_writable(self.stall_timeout):
            logger.info("SSE client dropped: it read nothing for %ss", self.stall_timeout)
            self.flow.abort()
            return False
        return not self.flow.closed

    def wrote(self) -> None:
        self.last_write = self.loop.time()

    def quiet(self) -> float:
        """Seconds since the client was last written to."""
        return self.loop.time() - self.last_write

    def idle_lines(self) -> Iterator[str]:
        """With no event to send: the link's changes, then a keep-alive once the
        stream has been quiet for ``SSE_KEEPALIVE``."""
        link_states = self.bell.link_states
        while not link_states.empty():
            yield format_sse_named("link", link_payload_of(link_states.get_nowait()))
            self.wrote()
        if self.quiet() >= keepalive_interval():
            yield ": keep-alive\n\n"
            self.wrote()

    async def wait_for_news(self) -> None:
        """Until a bell rings, the poll interval passes or a keep-alive is due."""
        await self.bell.wait(min(poll_interval(), keepalive_interval() - self.quiet()))
        await self.bell.renew()


def in_chunks(pieces: list[str]) -> Iterator[str]:
    """The events' SSE text joined in parts of about ``CHUNK`` characters."""
    first = 0
    while first < len(pieces):
        end, size = first, 0
        while end < len(pieces) and size < CHUNK:
            size += len(pieces[end])
            end += 1
        yield "".join(pieces[first:end])
        first = end


async def event_stream(
    start: int | None,
    event_filter: EventFilter,
    with_link: bool = False,
    send: Any = None,
    api_key: ApiKey | None = None,
) -> AsyncIterator[str]:
    """The SSE text of one client's stream, until the client goes away.

    ``send`` (the server's, see ``messaging.streams.transport_flow``) lets the stream
    see the client's buffer: nothing more is read from the store while it is
    above its high-water mark, and a client that reads nothing for
    ``STREAM_STALL_TIMEOUT`` seconds is dropped. A replay is read a page at a
    time, so at most one page and the transport's buffer are held per client.
    The stream ends when ``api_key`` is revoked.
    """
    groups = (EVENTS_GROUP, LINK_GROUP) if with_link else (EVENTS_GROUP,)
    bell = Doorbell(get_channel_layer(), groups)
    flow = NO_FLOW
    key_watch = watch_key(api_key, bell.rang.set)
    try:
        # Listen before the first read, so nothing can ring unheard in between.
        await bell.start()
        cursor = EventCursor(start, event_filter)
        await in_db_thread(cursor.begin)()
        read = in_db_thread(functools.partial(cursor.read, PAGE))
        yield f"retry: {RETRY_MS}\n\n"
        flow = flow_for(send)  # the response has started: its transport is there
        client = _ClientPace(bell, flow, key_watch)
        while await client.may_send():
            pieces = [format_sse(event) for event in await read()]
            if not pieces and cursor.more:
                continue  # a page the filter kept nothing of: more is right behind
            if pieces:
                # Sent in parts, each when there is room.
                for index, chunk in enumerate(in_chunks(pieces)):
                    if index and not await client.may_send():
                        return
                    yield chunk
                client.wrote()
                continue  # there may be more right behind
            for line in client.idle_lines():
                yield line
            await client.wait_for_news()
    finally:
        # Reached on disconnect (Django cancels the response and closes us), and
        # before the response ends: Twisted wants its producer gone by then.
        stop_watching(key_watch)
        flow.release()
        await asyncio.shield(bell.stop())


@require_GET
async def sse_view(request: HttpRequest) -> HttpResponse:
    """GET /v1/sse[?since=<event id>][&type=receipt,mo,status][&id=<message id>][&link=1]

    Without ``type``: receipts and incoming messages only, as sms-api-server's
    stream (``events.DEFAULT_STREAM_TYPES``).

    With SMSAPI_AUTH=required, a key (``Authorization: Bearer`` or ``?api_key=``,
    as EventSource cannot set headers) sees its own messages' events only.
    """
    try:
        api_key = await in_db_thread(request_api_key)(request) if auth_required() else None
    except KeyRejected as exc:
        return unauthorized(str(exc))
    try:
        event_filter = parse_filter(request.GET.get("type"), request.GET.get("id")).owned_by(
            api_key
        )
        since = parse_start(request.GET.get("since"), "since")
    except InvalidParameter as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:  # what the browser sends on reconnect wins over the URL it reconnects to
        start = parse_start(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    except InvalidParameter:
        start = None
    if start is None:
        start = since
    with_link = request.GET.get("link", "") in {"1", "true", "yes"}
    stream = event_stream(
        start, event_filter, with_link, request.scope.get(SEND_SCOPE_KEY), api_key
    )
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
