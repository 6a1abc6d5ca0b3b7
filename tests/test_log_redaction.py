"""API keys never reach the logs: ``?api_key=`` values are redacted in every line our
formatters write and in daphne's access log; the Authorization header is never logged."""

from __future__ import annotations

import http.client
import io
import json
import logging
import sys
from datetime import datetime

import pytest
from channels.testing import HttpCommunicator

from messaging.api import querying
from smsapi.asgi import application
from smsapi.daphne_requests import redact_access_log
from smsapi.logging import JsonFormatter, TextFormatter
from tests.live import daphne

SECRET = "sk_live_0123456789abcdefSECRET"


def record(message: str, *args, **extra) -> logging.LogRecord:
    return logging.getLogger("test").makeRecord(
        "test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_keys_in_messages_arguments_context_and_exceptions_are_redacted(formatter):
    class Request:  # what Django's request records carry in ``extra``
        def __str__(self):
            return f"<ASGIRequest: GET '/v1/sse?since=0&api_key={SECRET}'>"

    line = record(
        'GET "%s" failed',
        f"http://gw/v1/sse?api_key={SECRET}&since=1",
        request=Request(),
        url=f"https://hook.example/in?API_KEY={SECRET}",
    )
    try:
        raise ValueError(f"Client error for url 'http://gw/v1/send?a=1&api_key={SECRET}'")
    except ValueError:
        line.exc_info = sys.exc_info()
    text = formatter.format(line)
    assert SECRET not in text
    assert text.count("REDACTED") >= 4  # the traceback quotes the raising line too
    assert "since=1" in text  # only the key goes
    if isinstance(formatter, JsonFormatter):
        data = json.loads(text)  # still one valid JSON object, quotes and all
        assert data["message"] == 'GET "http://gw/v1/sse?api_key=REDACTED&since=1" failed'


@pytest.mark.django_db(transaction=True)
async def test_a_failing_request_logs_neither_its_key_nor_its_authorization(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(querying, "query", broken)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        communicator = HttpCommunicator(
            application,
            "GET",
            "/v1/query",
            headers=[(b"host", b"localhost"), (b"authorization", f"Bearer {SECRET}x".encode())],
        )
        communicator.scope["query_string"] = f"src=a&message_id=1&api_key={SECRET}".encode()
        assert (await communicator.get_response(timeout=10))["status"] == 500
    finally:
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    assert "Internal Server Error: /v1/query" in logged and "Traceback" in logged
    assert SECRET not in logged  # neither the query's key nor the header's


def test_daphnes_access_lines_are_redacted():
    from daphne.access import AccessLogGenerator

    assert redact_access_log()
    stream = io.StringIO()
    AccessLogGenerator(stream)(
        "http",
        "complete",
        {
            "client": "127.0.0.1:5000",
            "method": "GET",
            "path": f"/v1/sse?api_key={SECRET}",
            "status": 200,
            "size": 10,
        },
    )
    AccessLogGenerator(stream)(
        "websocket", "connected", {"client": "127.0.0.1:5000", "path": f"/v1/ws?api_key={SECRET}"}
    )
    lines = stream.getvalue()
    assert SECRET not in lines
    assert '"GET /v1/sse?api_key=REDACTED" 200 10' in lines
    assert "WSCONNECT /v1/ws?api_key=REDACTED" in lines
    AccessLogGenerator.write_entry(
        AccessLogGenerator(stream), "h", datetime.now(), "GET /?api_key=x"
    )  # daphne's signature, as the wrapper expects it


@pytest.mark.django_db(transaction=True)
def test_a_real_server_writes_no_key_to_its_access_log(tmp_path):
    with daphne(tmp_path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/v1/status?api_key={SECRET}")
        assert conn.getresponse().status == 200
        conn.close()
    log = server.log()
    assert "/v1/status?api_key=REDACTED" in log  # the access line is there...
    assert SECRET not in log  # ...without the key
