"""Daphne's HTTP requests without the work Twisted does for nobody.

Twisted's ``Request`` parses every POST body sent as a form
(``application/x-www-form-urlencoded`` or ``multipart/form-data``) into
``request.args``, and reads the Content-Type header through the ``email``
package to decide. Daphne never looks at ``args``: it hands the raw body to
Django, which parses it itself. Measured on one daphne process under
``/v1/send`` (a form post): 12-18 % of its CPU went to that unused parse.

Twisted lets a request skip it (``Request(..., parsePOSTFormSubmission=False)``),
but daphne builds its requests without that argument, so its request class
gets it as a default here, once, at start-up.

Twisted's HTTP factory also formats a combined-log line for every request and
hands it to Twisted's logging, which daphne discards (it writes its own access
log, ``--access-log``; only with ``-v 2`` or more does it pass Twisted's log on,
where the line repeats daphne's): 2.4 % of the CPU of a ``/v1/send`` that
stores nothing. Daphne's factory skips that line here.

Daphne's own access log writes each request's path with its query string,
where browsers' EventSource and WebSocket clients put their key
(``?api_key=``): ``redact_access_log`` takes the key out of each line.

Twisted keeps a request's whole body before daphne sees it:
``bound_request_bodies`` keeps at most ``HTTP_MAX_BODY_SIZE`` of it.
"""

from __future__ import annotations

import functools
import inspect


def skip_twisted_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; False where that
    cannot apply (daphne not installed, or a Twisted without the option)."""
    try:
        from daphne.http_protocol import WebRequest
        from twisted.web.http import Request
    except ImportError:  # served by another ASGI server
        return False
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


def skip_twisted_access_log() -> bool:
    """Stop daphne's HTTP factory writing Twisted's access-log line; False
    where daphne is not installed."""
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:  # served by another ASGI server
        return False
    HTTPFactory.log = _no_access_line
    return True


def _no_access_line(self, request) -> None:
    """Daphne's own access log (``--access-log``) records the request."""


def redact_access_log() -> bool:
    """Take ``api_key`` values out of daphne's access-log lines; False where
    daphne is not installed or its access log has changed shape.

    Daphne writes the lines itself (not through ``logging``, so the log
    formatters never see them), from ``AccessLogGenerator.write_entry(host,
    date, request, ...)`` with ``request`` as ``"GET /path?query"``;
    tests/test_log_redaction.py fails if that changes.
    """
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:
        return False
    from messaging.url_secrets import redact_url

    write_entry = AccessLogGenerator.write_entry
    if getattr(write_entry, "redacts_secrets", False):
        return True
    if "request" not in inspect.signature(write_entry).parameters:
        return False

    @functools.wraps(write_entry)
    def redacted_write_entry(self, host, date, request, *args, **kwargs):
        return write_entry(self, host, date, redact_url(request), *args, **kwargs)

    redacted_write_entry.redacts_secrets = True
    AccessLogGenerator.write_entry = redacted_write_entry
    return True


def bound_request_bodies() -> bool:
    """Keep no more than ``HTTP_MAX_BODY_SIZE`` of any request body in daphne.

    Twisted stores a whole body (in memory, then a temporary file) before daphne
    hands the request on, so a body of any size would fill the disk before the
    application could answer 413. Through Twisted's ``IRequest`` hooks
    (``gotLength``, ``handleContentChunk``): past the limit the bytes of a body
    with a declared length are dropped (the application answers 413 from that
    length, ``smsapi.handlers``), and a connection sending a body without one
    (chunked) is closed. False where daphne is not installed.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return False
    if getattr(WebRequest, "bounds_bodies", False):
        return True
    from django.conf import settings

    got_length = WebRequest.gotLength
    handle_chunk = WebRequest.handleContentChunk

    @functools.wraps(got_length)
    def gotLength(self, length):  # noqa: N802 - Twisted's name
        self.body_declared_length = length
        self.body_received = 0
        limit = settings.HTTP_MAX_BODY_SIZE
        got_length(self, length if length is None or length <= limit else 0)

    @functools.wraps(handle_chunk)
    def handleContentChunk(self, data):  # noqa: N802 - Twisted's name
        received = getattr(self, "body_received", 0) + len(data)
        self.body_received = received
        if received <= settings.HTTP_MAX_BODY_SIZE:
            handle_chunk(self, data)
        elif getattr(self, "body_declared_length", None) is None:
            self.channel.transport.abortConnection()  # no length to answer 413 from

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.bounds_bodies = True
    return True
