"""Daphne's requests skip Twisted's form parsing (smsapi/daphne_requests.py,
upstream/daphne.py).

Twisted's access-log line is no longer skipped: 2 % of a request's CPU did not
pay for the patch (upstream/daphne.py), so its test went with it."""

from __future__ import annotations

from types import SimpleNamespace

from daphne.http_protocol import WebRequest
from twisted.web.test.requesthelper import DummyChannel

from smsapi.daphne_requests import skip_twisted_form_parsing

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
