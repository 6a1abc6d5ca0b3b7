"""Back-pressure for the streams: is the client reading what we send?

ASGI gives an application no such signal, and daphne adds none: ``await
send(...)`` returns at once and Twisted buffers whatever is written, without
bound (daphne issue #170, open since 2018). A client that stops reading an SSE
replay or the answers of a JSON-RPC flood therefore grew the server by hundreds
of megabytes.

Twisted itself has the signal, in its public producer/consumer API: a
streaming producer registered with a consumer (``IConsumer.registerProducer``)
is paused when the transport's send buffer passes its high-water mark
(``bufferSize``, 64 KiB) and resumed once the buffer is empty, and a TCP
transport stops reading its socket while it is paused itself
(``IPushProducer.pauseProducing``). ``TransportFlow`` is such a producer: the
streams wait for it to be writable before they produce more, and the JSON-RPC
socket stops reading while it cannot answer.

What is *not* public is how an application reaches daphne's protocol object:
daphne hands every application ``send = functools.partial(Server.handle_reply,
protocol)``, where ``protocol`` is a ``twisted.web.http.Request`` (HTTP) or an
autobahn ``WebSocketServerProtocol``; and a WebSocket protocol puts every frame
it reads into ``protocol.application_queue``, an unbounded ``asyncio.Queue``
(a client sending faster than the consumer takes its frames grew the server by
100 MB in tests/test_backpressure.py), whose length is read here to pause
reading. Those two facts are used here and nowhere else, only on the daphne
versions they were read on (``SUPPORTED_DAPHNE``); tests/test_backpressure.py
fails when the installed daphne is another one or no longer has that shape.
Measured reason (tests/test_backpressure.py, before -> after this module):
30 silent SSE replays and one JSON-RPC flood grew the server by hundreds of
megabytes and by 100 MB; with it, by a few MB (figures in docs/security.md).

Two more details of daphne are handled here:

- A WebSocket starts as an HTTP request; daphne hands the TCP transport to the
  WebSocket protocol but leaves the HTTP channel registered as the transport's
  producer, so it is unregistered first (autobahn's public
  ``unregisterProducer``), as daphne #170 describes.
- Over TLS, Twisted's HTTP channel registers with no producer (the TLS wrapper
  is not one), so an SSE flow registers with the TLS transport itself.

Anywhere else (another ASGI server, Channels' in-process test communicator, an
unknown daphne) ``flow_for`` gives ``NO_FLOW``, always writable: the streams
keep their other bounds (paged replays, one call in flight on the events
socket, the JSON-RPC in-flight cap) but cannot see the client's buffer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

logger = logging.getLogger(__name__)

# daphne versions whose ``send`` is ``partial(Server.handle_reply, protocol)``
# (read in daphne 4.2.3's server.py, ``create_application``).
SUPPORTED_DAPHNE = ("4.1", "4.2")
# Where StreamSendMiddleware puts the server's send callable for HTTP views.
SEND_SCOPE_KEY = "smsapi.send"
# WebSocket messages daphne may hold read but not yet taken by the consumer
# (its input queue has no bound): reading pauses at HIGH and resumes at LOW.
BACKLOG_HIGH = 64
BACKLOG_LOW = 16


class Flow:
    """What a stream asks of its connection (the interface of both kinds)."""

    available = False  # True: a real signal from the transport

    @property
    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    def stalled_for(self) -> float:
        """Seconds the client's buffer has been full (0 when it is not)."""
        return 0.0

    async def wait_writable(self, timeout: float) -> bool:
        """Until the client's buffer has room; False when ``timeout`` passes first."""
        return True

    def pause_reading(self) -> None:
        """Stop reading the client's socket (its sends then back up to it)."""

    def resume_reading(self) -> None:
        """Read the client's socket again."""

    def limit_backlog(self) -> None:
        """Call on each message taken from the server: reading pauses while the
        server holds ``BACKLOG_HIGH`` messages read but not yet taken, and resumes
        at ``BACKLOG_LOW``."""

    def abort(self) -> None:
        """Drop the connection now, discarding what is buffered for it."""

    def release(self) -> None:
        """Unregister from the transport (before the response ends)."""


NO_FLOW = Flow()


class TransportFlow(Flow):
    """A Twisted streaming producer (``IPushProducer``) for one connection.

    Twisted calls ``pauseProducing`` when the send buffer passes its high-water
    mark, ``resumeProducing`` when it is empty again and ``stopProducing`` when
    the connection is lost. daphne runs Twisted's asyncio reactor, so these run
    on the event loop's thread and may touch asyncio objects.
    """

    available = True

    def __init__(self, transport: Any, backlog: Callable[[], int] | None = None) -> None:
        self._transport = transport
        self._backlog = backlog
        self._backlog_paused = False
        self._reader = _reading_side(transport)
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._paused_at: float | None = None
        self._pauses = 0
        self._unregister = None

    # --- IPushProducer (called by Twisted) ---

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self._room.clear()
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused_at = None
        self._room.set()

    def stopProducing(self) -> None:  # noqa: N802
        self._closed = True
        self._paused_at = None
        self._room.set()  # wake the waiters: they see ``closed``

    # --- for the streams ---

    @property
    def writable(self) -> bool:
        return self._room.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    def stalled_for(self) -> float:
        return 0.0 if self._paused_at is None else time.monotonic() - self._paused_at

    async def wait_writable(self, timeout: float) -> bool:
        if self._room.is_set():
            return True
        try:
            await asyncio.wait_for(self._room.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def pause_reading(self) -> None:
        """Counted: reading resumes when every pause has been matched by a resume."""
        self._pauses += 1
        if self._pauses == 1 and self._reader is not None and not self._closed:
            self._reader.pauseProducing()

    def resume_reading(self) -> None:
        if self._pauses == 0:
            return
        self._pauses -= 1
        if self._pauses == 0 and self._backlog is not None and self._backlog() >= BACKLOG_HIGH:
            # Still too much read and not taken: the backlog's own pause takes over.
            self._backlog_paused = True
            self._pauses = 1
            return
        if self._pauses == 0 and self._reader is not None and not self._closed:
            self._reader.resumeProducing()

    def limit_backlog(self) -> None:
        if self._backlog is None:
            return
        waiting = self._backlog()
        if not self._backlog_paused and waiting >= BACKLOG_HIGH:
            self._backlog_paused = True
            self.pause_reading()
        elif self._backlog_paused and waiting <= BACKLOG_LOW:
            self._backlog_paused = False
            self.resume_reading()

    def abort(self) -> None:
        self._closed = True
        self._room.set()
        abort = getattr(self._transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self._transport.loseConnection()

    def release(self) -> None:
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            try:
                unregister()
            except Exception:  # already gone with the connection
                logger.debug("producer unregister failed", exc_info=True)


def _reading_side(transport: Any) -> Any:
    """What pauses reading: the TCP transport, under a TLS wrapper if there is one."""
    from twisted.internet.interfaces import IPushProducer

    for candidate in (transport, getattr(transport, "transport", None)):
        if candidate is not None and IPushProducer.providedBy(candidate):
            return candidate
    return None


@functools.cache
def daphne_supported() -> bool:
    """Whether the installed daphne is one whose ``send`` shape was checked."""
    try:
        version = metadata.version("daphne")
    except metadata.PackageNotFoundError:
        return False
    supported = version.startswith(tuple(f"{v}." for v in SUPPORTED_DAPHNE))
    if not supported:
        logger.warning(
            "daphne %s is not one of %s: streams run without back-pressure "
            "(messaging.streams.transport_flow)",
            version,
            ", ".join(SUPPORTED_DAPHNE),
        )
    return supported


def daphne_protocol(send: Any) -> Any | None:
    """daphne's protocol object behind an ASGI ``send``, or None (the private part)."""
    if not isinstance(send, functools.partial) or len(send.args) != 1:
        return None
    if getattr(send.func, "__name__", "") != "handle_reply" or not daphne_supported():
        return None
    # Imported only when daphne runs: importing daphne.server installs a reactor.
    server = sys.modules.get("daphne.server")
    if server is None or not isinstance(getattr(send.func, "__self__", None), server.Server):
        return None
    return send.args[0]


def flow_for(send: Any) -> Flow:
    """The flow of the connection behind ``send``, registered with its transport;
    ``NO_FLOW`` when the server gives no way to it. Call ``release`` when done."""
    protocol = daphne_protocol(send)
    if protocol is None:
        return NO_FLOW
    try:
        return _register(protocol)
    except Exception:  # a connection already closing, or a layout not foreseen
        logger.warning("no back-pressure for this connection", exc_info=True)
        return NO_FLOW


def _register(protocol: Any) -> Flow:
    from autobahn.twisted.websocket import WebSocketServerProtocol
    from twisted.internet.interfaces import IPushProducer
    from twisted.web.http import Request

    transport = protocol.transport
    if transport is None:
        return NO_FLOW
    if isinstance(protocol, WebSocketServerProtocol):
        # daphne puts every frame it reads in this queue, without bound.
        queue = getattr(protocol, "application_queue", None)
        flow = TransportFlow(transport, queue.qsize if queue is not None else None)
        # daphne left the HTTP channel registered on the upgraded transport.
        protocol.unregisterProducer()
        protocol.registerProducer(flow, True)
        flow._unregister = protocol.unregisterProducer
    elif isinstance(protocol, Request):
        flow = TransportFlow(transport)
        if IPushProducer.providedBy(transport):
            # Plain TCP: the HTTP channel is the transport's producer and passes
            # pause and resume on to the request's producer.
            protocol.registerProducer(flow, True)
            flow._unregister = protocol.unregisterProducer
        else:  # TLS: the channel registered nothing; the TLS transport takes us
            transport.registerProducer(flow, True)
            flow._unregister = transport.unregisterProducer
    else:
        return NO_FLOW
    return flow


class StreamSendMiddleware:
    """ASGI middleware: gives HTTP views that stream the server's ``send``
    (``scope["smsapi.send"]``), from which ``flow_for`` finds the transport.

    Only for paths ending in ``/sse``: other requests pass untouched.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/sse"):
            scope = {**scope, SEND_SCOPE_KEY: send}
        return await self.app(scope, receive, send)
