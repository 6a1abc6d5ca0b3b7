"""What the gateway shows and to whom: /v1/status's link details when keys are
required, and the default Host and CORS origins (smsapi/settings.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import api_keys
from messaging.models import LinkStatus, Message
from smsapi.asgi import application
from tests.conftest import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

DETAILS = ("worker_id", "smsc", "detail")


@pytest.fixture
def bound_link():
    now = timezone.now()
    return LinkStatus.objects.create(
        worker_id="host-1-abcd",
        state="bound",
        detail="bound as smsapi-secret-system-id",
        smsc="smsc.internal:2775",
        changed_at=now,
        heartbeat_at=now,
    )


def links(client, **headers) -> list[dict]:
    response = client.get("/v1/status", **headers)
    assert response.status_code == 200, response.content
    return response.json()["link"]


def test_without_a_key_only_the_state_of_each_link_is_shown(settings, bound_link):
    settings.SMSAPI_AUTH = "required"
    anonymous = links(APIClient())
    assert anonymous == [{"state": "bound"}]
    key = api_keys.create_key("alice").key
    keyed = links(APIClient(), HTTP_AUTHORIZATION=f"Bearer {key}")
    assert keyed[0]["smsc"] == "smsc.internal:2775" and keyed[0]["detail"].startswith("bound as")


def test_a_staff_session_sees_the_link_details(settings, bound_link, django_user_model):
    settings.SMSAPI_AUTH = "required"
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("op", password="x", is_staff=True))
    assert all(name in links(staff)[0] for name in DETAILS)
    # The same through the API's own middleware chain, which has no sessions.
    cookie = f"sessionid={staff.cookies['sessionid'].value}".encode()
    answer = async_to_sync(
        HttpCommunicator(
            application, "GET", "/v1/status", headers=[(b"host", b"localhost"), (b"cookie", cookie)]
        ).get_response
    )(timeout=10)
    assert json.loads(answer["body"])["link"][0]["smsc"] == "smsc.internal:2775"
    visitor = Client()
    visitor.force_login(django_user_model.objects.create_user("visitor", password="x"))
    assert links(visitor) == [{"state": "bound"}]  # logged in, but not staff


def test_with_auth_off_everyone_sees_everything(settings, bound_link):
    settings.SMSAPI_AUTH = "off"
    assert all(name in links(APIClient())[0] for name in DETAILS)


SHOW_DEFAULTS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.ALLOWED_HOSTS, s.CORS_ALLOW_ALL_ORIGINS, "
    "getattr(s, 'CORS_ALLOWED_ORIGIN_REGEXES', None), s.CORS_ALLOWED_ORIGINS)"
)


def defaults(**env: str) -> str:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ALLOWED_HOSTS", "CORS_ALLOWED_ORIGINS", "SMSAPI_AUTH")
    }
    environment.update(DJANGO_SETTINGS_MODULE="smsapi.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", SHOW_DEFAULTS],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def test_the_defaults_answer_loopback_only_unless_keys_are_required():
    hosts = "['localhost', '127.0.0.1', '[::1]']"
    assert defaults().startswith(f"{hosts} False ['^https?://(localhost|")
    assert defaults(SMSAPI_AUTH="required") == f"{hosts} True None []"
    assert defaults(ALLOWED_HOSTS="sms.example.com", CORS_ALLOWED_ORIGINS="https://a.example") == (
        "['sms.example.com'] False None ['https://a.example']"
    )
    assert defaults(ALLOWED_HOSTS="*", CORS_ALLOWED_ORIGINS="*").startswith("['*'] True")


def test_cors_off_loopback_pages_may_call_the_api_and_other_sites_may_not(settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = []
    settings.CORS_ALLOWED_ORIGIN_REGEXES = [r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"]

    def allowed(origin: str) -> str | None:
        response = APIClient().options(
            "/v1/send", HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
        )
        return response.headers.get("Access-Control-Allow-Origin")

    assert allowed("http://localhost:3000") == "http://localhost:3000"
    assert allowed("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert allowed("https://evil.example") is None
    assert allowed("http://localhost.evil.example") is None


def post_send(origin: str | None, key: str | None = None) -> tuple[int, dict]:
    headers = [
        (b"host", b"localhost:8080"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", b"26"),
    ]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    answer = async_to_sync(
        HttpCommunicator(
            application, "POST", "/v1/send", body=b"dst=5550001&text=hi&wait=0", headers=headers
        ).get_response
    )(timeout=10)
    return answer["status"], json.loads(answer["body"])


def test_without_keys_other_web_sites_cannot_post_through_the_api(settings):
    settings.SMSAPI_AUTH = "off"
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = []
    settings.CORS_ALLOWED_ORIGIN_REGEXES = [r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"]
    status, body = post_send("https://evil.example")  # a form on a web site, in a browser
    assert status == 403 and "other web sites" in body["error"]
    assert status == 403 and not Message.objects.exists()
    assert post_send("null")[0] == 403  # a sandboxed page
    assert post_send(None)[0] == 202  # curl, a program: no Origin
    assert post_send("http://localhost:8080")[0] == 202  # the dashboard: the same origin
    assert post_send("http://localhost:3000")[0] == 202  # a page served from loopback
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    assert post_send("https://app.example")[0] == 202  # an origin the operator allowed


def test_with_keys_required_the_key_decides_not_the_origin(settings):
    settings.SMSAPI_AUTH = "required"
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = []
    key = api_keys.create_key("alice").key
    assert post_send("https://evil.example", key)[0] == 202
    assert post_send("https://evil.example")[0] == 401


def ws_connects(headers: list[tuple[bytes, bytes]]) -> bool:
    async def connect() -> bool:
        ws = WebsocketCommunicator(application, "/v1/ws/jsonrpc", headers=headers)
        connected, _ = await ws.connect(timeout=10)
        await ws.disconnect()
        return connected

    return async_to_sync(connect)()


def test_websockets_refuse_foreign_hosts_and_without_keys_foreign_origins(settings):
    settings.SMSAPI_AUTH = "off"
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = []
    settings.CORS_ALLOWED_ORIGIN_REGEXES = []
    host = (b"host", b"localhost:8080")
    assert ws_connects([host])
    assert ws_connects([host, (b"origin", b"http://localhost:8080")])  # the dashboard
    assert not ws_connects([host, (b"origin", b"https://evil.example")])
    assert not ws_connects([(b"host", b"rebound.evil.example:8080")])  # DNS rebinding
    settings.SMSAPI_AUTH = "required"  # then the key decides (the socket is accepted, then
    assert ws_connects([host, (b"origin", b"https://evil.example")])  # closed 4401 by ws_auth)
