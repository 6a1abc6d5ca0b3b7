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

What is *not* public is how an application reaches daphne's protocol object
(the transport behind it, and the WebSocket protocol's unbounded queue of
frames read, whose length pauses reading): ``upstream.daphne`` does that, on
the daphne versions it was written for (``SUPPORTED_DAPHNE``), and
tests/test_upstream_daphne.py and tests/test_backpressure.py fail when daphne
changes under it. Measured reason (tests/test_backpressure.py, before -> after
this module): 30 silent SSE replays and one JSON-RPC flood grew the server by
hundreds of megabytes and by 100 MB; with it, by a few MB (figures in
docs/security.md).

Anywhere else (another ASGI server, Channels' in-process test communicator, an
unknown daphne) ``flow_for`` gives ``NO_FLOW``, always writable: the streams
keep their other bounds (paged replays, one call in flight on the events
socket, the JSON-RPC in-flight cap) but cannot see the client's buffer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from upstream.daphne import DAPHNE_VERSIONS, protocol_behind, register_producer

logger = logging.getLogger(__name__)

# daphne versions whose ``send`` is ``partial(Server.handle_reply, protocol)``.
SUPPORTED_DAPHNE = DAPHNE_VERSIONS
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


def flow_for(send: Any) -> Flow:
    """The flow of the connection behind ``send``, registered with its transport;
    ``NO_FLOW`` when the server gives no way to it. Call ``release`` when done."""
    protocol = protocol_behind(send)
    if protocol is None:
        return NO_FLOW
    try:
        registered = register_producer(protocol, TransportFlow)
    except Exception:  # a connection already closing, or a layout not foreseen
        logger.warning("no back-pressure for this connection", exc_info=True)
        return NO_FLOW
    if registered is None:
        return NO_FLOW
    flow, flow._unregister = registered
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
