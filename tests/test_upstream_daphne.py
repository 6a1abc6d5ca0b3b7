"""upstream.daphne: what it reaches in daphne, Twisted and autobahn is still there.

Fails when daphne changes what the module relies on; checks that on another
daphne nothing is patched and the callers are told (False/None, a warning).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from importlib import metadata
from pathlib import Path

from upstream import daphne


def _source(module: str) -> str:
    # Read as text: importing daphne.server would install a Twisted reactor here.
    return Path(importlib.util.find_spec(module).origin).read_text()


def test_the_installed_daphne_is_one_it_was_written_for():
    version = metadata.version("daphne")
    assert version.startswith(tuple(f"{v}." for v in daphne.DAPHNE_VERSIONS)), version


def test_daphne_still_hands_its_protocol_in_send_and_queues_frames_unbounded():
    server = _source("daphne.server")
    assert "send=partial(self.handle_reply, protocol)" in server
    assert "async def handle_reply(self, protocol, message):" in server
    assert "self.application_queue.put_nowait(" in _source("daphne.ws_protocol")


def test_daphnes_request_is_twisteds_with_the_hooks_patched():
    from daphne.http_protocol import WebRequest
    from twisted.web import http

    import smsapi.asgi  # noqa: F401 - applies them

    assert issubclass(WebRequest, http.Request)
    assert "parsePOSTFormSubmission" in inspect.signature(http.Request.__init__).parameters
    # Twisted's channel feeds a request's body through these two methods.
    channel = inspect.getsource(http.HTTPChannel)
    assert "req.gotLength(" in channel and ".handleContentChunk," in channel
    assert WebRequest.skips_form_parsing and WebRequest.bounds_bodies


def test_daphnes_access_log_entry_still_takes_the_request_line():
    from daphne.access import AccessLogGenerator

    write_entry = AccessLogGenerator.write_entry
    original = getattr(write_entry, "__wrapped__", write_entry)
    parameters = list(inspect.signature(original).parameters)
    assert parameters[:4] == ["self", "host", "date", "request"]


def test_autobahn_and_twisted_give_what_register_producer_uses():
    from autobahn.twisted.websocket import WebSocketServerProtocol
    from twisted.web.http import Request

    for cls in (WebSocketServerProtocol, Request):
        assert callable(cls.registerProducer) and callable(cls.unregisterProducer)


def test_on_another_daphne_nothing_is_patched_and_callers_are_told(another_version, caplog):
    class Server:
        async def handle_reply(self, protocol, message):
            pass

    with caplog.at_level(logging.WARNING, logger="upstream"):
        assert daphne.skip_form_parsing() is False
        assert daphne.redact_access_log(lambda line: line) is False
        assert daphne.bound_request_bodies(lambda: 10) is False
        assert daphne.protocol_behind(functools.partial(Server().handle_reply, object())) is None
    for what in ("form parsing", "redaction", "request bodies", "back-pressure"):
        assert what in caplog.text, what
