"""daphne (and the Twisted and autobahn objects it is built on), reached into.

Written for daphne 4.1/4.2 (``DAPHNE_VERSIONS``, read on 4.2.3) and checked by
tests/test_upstream_daphne.py, which fails when daphne changes under it. On
another daphne each function logs a warning (``upstream.written_for``), leaves
daphne as it is and returns False (or None): what that costs is said per
function.

- ``skip_form_parsing``: Twisted's ``Request`` parses every POST body sent as a
  form into ``request.args`` (reading the Content-Type through the ``email``
  package); daphne never looks at ``args`` and hands Django the raw body.
  Twisted lets a request skip it (``parsePOSTFormSubmission=False``), but
  daphne builds its requests without that argument: its request class gets it
  as a default. Measured, daphne serving /v1/send (dry run, wrk -c20, CPU of
  the daphne process per request, medians of 3 interleaved runs): 579 µs with
  it, 680 µs without (+17 %). Elsewhere: Twisted parses (CPU only).
- ``redact_access_log``: daphne writes its access-log lines itself (not through
  ``logging``), from ``AccessLogGenerator.write_entry(host, date, request,
  ...)`` with ``request`` as ``"GET /path?query"``, where browsers' EventSource
  and WebSocket clients put their key; ``redact`` is applied to it. Elsewhere:
  False, and ``serve`` turns the access log off.
- ``bound_request_bodies``: Twisted stores a whole body (in memory, then a
  temporary file) before daphne hands the request on; through Twisted's
  ``IRequest`` hooks on daphne's request class (``gotLength``,
  ``handleContentChunk``) at most ``limit()`` bytes are kept. Elsewhere: the
  application still answers 413, but a huge body is stored first.
- ``protocol_behind`` and ``register_producer``: daphne hands every
  application ``send = functools.partial(Server.handle_reply, protocol)``,
  where ``protocol`` is a ``twisted.web.http.Request`` (HTTP) or an autobahn
  ``WebSocketServerProtocol`` that queues every frame it reads in
  ``protocol.application_queue`` (an unbounded ``asyncio.Queue``). The streams'
  back-pressure (``messaging.streams.transport_flow``) registers a Twisted push
  producer through them. Elsewhere: None, and the streams run without it.

Twisted's skipped access-log line (``HTTPFactory.log``, a patch of daphne's
factory) was removed: 2 % of the CPU of a /v1/send (591 against 579 µs per
request, within the runs' noise) does not pay for a patch.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
from collections.abc import Callable
from typing import Any

from upstream import written_for

DAPHNE_VERSIONS = ("4.1", "4.2")


def daphne_installed() -> bool:
    return importlib.util.find_spec("daphne") is not None


def applies(what: str) -> bool:
    """True when daphne is installed and one of ``DAPHNE_VERSIONS`` (warns if not)."""
    return daphne_installed() and written_for("daphne", *DAPHNE_VERSIONS, what=what)


def skip_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; False where that
    cannot apply (no daphne, another daphne, a Twisted without the option)."""
    if not applies("daphne requests without Twisted's form parsing (upstream.daphne)"):
        return False
    from daphne.http_protocol import WebRequest
    from twisted.web.http import Request

    if "parsePOSTFormSubmission" not in inspect.signature(Request.__init__).parameters:
        return False
    if getattr(WebRequest, "skips_form_parsing", False):
        return True
    build = WebRequest.__init__

    @functools.wraps(build)
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        build(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest.skips_form_parsing = True
    return True


def redact_access_log(redact: Callable[[str], str]) -> bool:
    """Pass the request line of daphne's access-log entries through ``redact``;
    False where daphne is not installed, another one, or its log changed shape."""
    if not applies("the api_key redaction of daphne's access log (upstream.daphne)"):
        return False
    from daphne.access import AccessLogGenerator

    write_entry = AccessLogGenerator.write_entry
    if getattr(write_entry, "redacts_secrets", False):
        return True
    if "request" not in inspect.signature(write_entry).parameters:
        return False

    @functools.wraps(write_entry)
    def redacted_write_entry(self, host, date, request, *args, **kwargs):
        return write_entry(self, host, date, redact(request), *args, **kwargs)

    redacted_write_entry.redacts_secrets = True
    AccessLogGenerator.write_entry = redacted_write_entry
    return True


def bound_request_bodies(limit: Callable[[], int]) -> bool:
    """Keep no more than ``limit()`` bytes of any request body in daphne.

    Past the limit the bytes of a body with a declared length are dropped (the
    application answers 413 from that length), and a connection sending a body
    without one (chunked) is closed. False where it cannot apply.
    """
    if not applies("the bound on daphne's request bodies (upstream.daphne)"):
        return False
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest, "bounds_bodies", False):
        return True
    got_length = WebRequest.gotLength
    handle_chunk = WebRequest.handleContentChunk

    @functools.wraps(got_length)
    def gotLength(self, length):  # noqa: N802 - Twisted's name
        self.body_declared_length = length
        self.body_received = 0
        got_length(self, length if length is None or length <= limit() else 0)

    @functools.wraps(handle_chunk)
    def handleContentChunk(self, data):  # noqa: N802 - Twisted's name
        received = getattr(self, "body_received", 0) + len(data)
        self.body_received = received
        if received <= limit():
            handle_chunk(self, data)
        elif getattr(self, "body_declared_length", None) is None:
            self.channel.transport.abortConnection()  # no length to answer 413 from

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.bounds_bodies = True
    return True


def protocol_behind(send: Any) -> Any | None:
    """daphne's protocol object behind an ASGI ``send``, or None."""
    if not isinstance(send, functools.partial) or len(send.args) != 1:
        return None
    if getattr(send.func, "__name__", "") != "handle_reply":
        return None
    if not applies("back-pressure for the streams (upstream.daphne)"):
        return None
    # Looked up, not imported: importing daphne.server installs a reactor.
    server = sys.modules.get("daphne.server")
    if server is None or not isinstance(getattr(send.func, "__self__", None), server.Server):
        return None
    return send.args[0]


def register_producer(
    protocol: Any, make_producer: Callable[[Any, Callable[[], int] | None], Any]
) -> tuple[Any, Callable[[], None]] | None:
    """Register ``make_producer(transport, backlog)`` as the streaming producer of
    daphne's ``protocol``; the producer and how to unregister it, None when the
    protocol is of no known kind or has no transport left.

    ``backlog`` (WebSockets only) gives the number of frames daphne has read and
    the consumer not yet taken. A WebSocket starts as an HTTP request: daphne
    hands the TCP transport over but leaves the HTTP channel registered as its
    producer (daphne #170), so that one is unregistered first. Over TLS,
    Twisted's HTTP channel registers no producer (the TLS wrapper is none), so
    the producer registers with the TLS transport itself.
    """
    from autobahn.twisted.websocket import WebSocketServerProtocol
    from twisted.internet.interfaces import IPushProducer
    from twisted.web.http import Request

    transport = protocol.transport
    if transport is None:
        return None
    if isinstance(protocol, WebSocketServerProtocol):
        queue = getattr(protocol, "application_queue", None)
        producer = make_producer(transport, queue.qsize if queue is not None else None)
        protocol.unregisterProducer()
        protocol.registerProducer(producer, True)
        return producer, protocol.unregisterProducer
    if isinstance(protocol, Request):
        producer = make_producer(transport, None)
        if IPushProducer.providedBy(transport):
            # Plain TCP: the HTTP channel is the transport's producer and passes
            # pause and resume on to the request's producer.
            protocol.registerProducer(producer, True)
            return producer, protocol.unregisterProducer
        transport.registerProducer(producer, True)
        return producer, transport.unregisterProducer
    return None
