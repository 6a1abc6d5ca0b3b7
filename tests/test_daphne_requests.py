"""Daphne's requests skip Twisted's form parsing and access-log line
(smsapi/daphne_requests.py)."""

from __future__ import annotations

from types import SimpleNamespace

from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.logger import globalLogPublisher
from twisted.web.http import HTTPFactory as TwistedHTTPFactory
from twisted.web.test.requesthelper import DummyChannel

from smsapi.daphne_requests import skip_twisted_access_log, skip_twisted_form_parsing

FORM = b"dst=5550001&text=hi"


class _ParsedOnly(WebRequest):
    """A daphne request that stops where daphne would hand it to the application."""

    def process(self):
        self.processed = True


def _receive_form() -> _ParsedOnly:
    channel = DummyChannel()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda r: None))
    request = _ParsedOnly(channel)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.gotLength(len(FORM))
    request.handleContentChunk(FORM)
    request.requestReceived(b"POST", b"/v1/send", b"HTTP/1.1")
    return request


def test_the_form_body_reaches_daphne_unparsed():
    assert skip_twisted_form_parsing()  # asgi.py did it already; a second call is harmless
    request = _receive_form()
    assert request.processed
    assert request.args == {}  # Twisted did not parse it ...
    request.content.seek(0)
    assert request.content.read() == FORM  # ... and the body is whole for daphne to pass on


def _twisted_log_lines(log_request) -> list[str]:
    """What Twisted's log receives while ``log_request(factory, request)`` runs."""
    request = _receive_form()
    request.code, request.sentLength = 202, 40
    factory = HTTPFactory(server=SimpleNamespace())
    events = []
    globalLogPublisher.addObserver(events.append)
    factory.startFactory()
    try:
        log_request(factory, request)
    finally:
        factory.stopFactory()
        globalLogPublisher.removeObserver(events.append)
    return [str(event.get("log_io", "")) for event in events]


def test_twisted_writes_no_access_line():
    assert skip_twisted_access_log()  # asgi.py did it already; a second call is harmless
    assert _twisted_log_lines(HTTPFactory.log) == []
    # Twisted's own factory would have written one:
    assert any(
        '"POST /v1/send HTTP/1.1" 202 40' in line
        for line in _twisted_log_lines(TwistedHTTPFactory.log)
    )
