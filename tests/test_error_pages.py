"""Every /v1 error is JSON ``{"error": ...}``, whoever produced it, through the real
ASGI application (smsapi/middleware.py, smsapi/urls.py's handlers, smsapi/handlers.py)."""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import HttpCommunicator
from django.db import InterfaceError, OperationalError

from messaging.api import querying
from messaging.models import Message
from smsapi.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

HOST = (b"host", b"localhost")


async def call(method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, dict, bytes]:
    headers = [HOST, *(headers or [])]
    if body and not any(name == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(body)).encode()))
    path, _, query = path.partition("?")
    communicator = HttpCommunicator(application, method, path, body=body, headers=headers)
    communicator.scope["query_string"] = query.encode()
    response = await communicator.get_response(timeout=10)
    return response["status"], dict(response["headers"]), response["body"]


def assert_json_error(status_headers_body, status: int) -> str:
    got, headers, body = status_headers_body
    assert got == status, body
    assert headers[b"Content-Type"] == b"application/json", headers
    assert b"<" not in body  # no HTML page, no debug page
    data = json.loads(body)
    assert list(data) == ["error"] and data["error"]
    return data["error"]


async def test_an_unknown_v1_path_is_a_json_404():
    error = assert_json_error(await call("GET", "/v1/nowhere"), 404)
    assert "/v1/nowhere" in error


async def test_a_json_404_even_with_debug_pages_on(settings):
    settings.DEBUG = True  # Django's technical 404 page becomes JSON too
    assert_json_error(await call("GET", "/v1/nowhere"), 404)


async def test_a_wrong_method_is_a_json_405_with_allow():
    status, headers, body = await call("POST", "/v1/sse")  # a plain Django view
    assert_json_error((status, headers, body), 405)
    assert headers[b"Allow"] == b"GET"
    assert_json_error(await call("DELETE", "/v1/send"), 405)  # a DRF view


async def test_a_body_over_the_limit_is_a_json_413_before_it_is_read(settings):
    settings.HTTP_MAX_BODY_SIZE = 1000
    status, headers, body = await call(
        "POST",
        "/v1/send",
        body=b"dst=5550001&text=" + b"x" * 2000,
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
    )
    assert "at most 1000 bytes" in assert_json_error((status, headers, body), 413)
    assert await Message.objects.acount() == 0


async def test_a_body_sent_in_chunks_without_a_length_is_cut_off_too(settings):
    settings.HTTP_MAX_BODY_SIZE = 1000
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/send",
        "raw_path": b"/v1/send",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "headers": [HOST, (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    for _ in range(5):
        await communicator.send_input(
            {"type": "http.request", "body": b"[" * 300, "more_body": True}
        )
    start = await communicator.receive_output(timeout=10)
    body = await communicator.receive_output(timeout=10)
    assert start["status"] == 413
    assert "error" in json.loads(body["body"])


async def test_form_data_over_djangos_limit_is_a_json_413(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # Django's RequestDataTooBig
    boundary = b"XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="dst"\r\n\r\n5550001\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
        + b"x" * 3000
        + b"\r\n--XyZ--\r\n"
    )
    error = assert_json_error(
        await call(
            "POST",
            "/v1/send",
            body=body,
            headers=[(b"content-type", b"multipart/form-data; boundary=" + boundary)],
        ),
        413,
    )
    assert "1000 bytes" in error
    assert await Message.objects.acount() == 0


async def test_too_many_form_fields_is_a_json_400(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5  # Django's TooManyFieldsSent
    parts = b"".join(
        b'--XyZ\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % n for n in range(20)
    )
    assert_json_error(
        await call(
            "POST",
            "/v1/send",
            body=parts + b"--XyZ--\r\n",
            headers=[(b"content-type", b"multipart/form-data; boundary=XyZ")],
        ),
        400,
    )


async def test_a_host_not_allowed_is_a_json_400_but_probes_answer_any_host(settings):
    settings.ALLOWED_HOSTS = ["sms.example.com"]
    communicator = HttpCommunicator(
        application, "GET", "/v1/status", headers=[(b"host", b"evil.example")]
    )
    response = await communicator.get_response(timeout=10)
    assert_json_error((response["status"], dict(response["headers"]), response["body"]), 400)
    probe = HttpCommunicator(application, "GET", "/healthz", headers=[(b"host", b"10.1.2.3:8080")])
    assert (await probe.get_response(timeout=10))["status"] == 200


async def test_an_unexpected_exception_is_a_json_500_logged_with_its_traceback(monkeypatch, caplog):
    def broken_query(*args, **kwargs):
        raise RuntimeError("internal detail that must not leave the server")

    monkeypatch.setattr(querying, "query", broken_query)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        status, headers, body = await call("GET", "/v1/query?src=x&message_id=1")
    assert_json_error((status, headers, body), 500)
    assert b"internal detail" not in body and b"Traceback" not in body
    logged = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
    assert logged and "internal detail" in str(logged[0].exc_info[1])


@pytest.mark.parametrize("error", [OperationalError("server closed"), InterfaceError("closed")])
async def test_a_store_outage_is_a_json_503_with_retry_after(monkeypatch, error):
    def store_down(*args, **kwargs):
        raise error

    monkeypatch.setattr(querying, "query", store_down)
    status, headers, body = await call("GET", "/v1/query?src=x&message_id=1")
    assert "unavailable" in assert_json_error((status, headers, body), 503)
    assert int(headers[b"Retry-After"]) > 0


async def test_pages_keep_djangos_html_errors():
    status, headers, body = await call("GET", "/admin/nowhere/")
    assert status in (302, 404)  # the admin sends a stranger to its login page
    assert not headers.get(b"Content-Type", b"").startswith(b"application/json")


def test_a_real_server_keeps_no_more_of_a_huge_body_than_the_limit(tmp_path):
    """Twisted would store the whole body before the application could refuse it
    (smsapi/daphne_requests.py keeps at most HTTP_MAX_BODY_SIZE of it)."""
    import contextlib
    import os
    import socket
    import time

    from tests.live import daphne

    megabyte = b"x" * (1 << 20)
    head_of_post = (
        b"POST /v1/send HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
    )

    def largest_open_file(pid: int) -> int:
        sizes = [0]
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                sizes.append(os.stat(f"/proc/{pid}/fd/{fd}").st_size)
        return max(sizes)

    with daphne(tmp_path, HTTP_MAX_BODY_SIZE=str(1 << 20)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head_of_post + b"Content-Length: %d\r\n\r\n" % (64 << 20))
            for _ in range(32):
                sock.sendall(megabyte)
            time.sleep(1)  # half of it sent and read: Twisted keeps none of it on disk
            assert largest_open_file(server.process.pid) < (2 << 20)
            for _ in range(32):
                sock.sendall(megabyte)
            answer = sock.makefile("rb").read()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head
        assert b'{"error": "request body too large (at most 1048576 bytes)"}' in body

        # A body with no declared length (chunked) past the limit: the connection is cut.
        answer = b""
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            try:
                sock.sendall(head_of_post + b"Transfer-Encoding: chunked\r\n\r\n")
                for _ in range(64):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(megabyte), megabyte))
                sock.sendall(b"0\r\n\r\n")
                answer = sock.recv(4096)
            except OSError:  # reset while sending
                pass
        assert answer == b""  # closed without reading it all, and without an answer
        status, _, _ = _get(server.port, "/v1/status")
        assert status == 200  # and the server goes on


def _get(port: int, path: str):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()
