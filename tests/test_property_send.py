"""Property: whatever a client sends to /v1/send, /v1/send/batch or SM.Submit, the
answer is never a 5xx, what is stored is what SMPP and the store can carry, and
the worker goes on delivering (issue 18).

Hypothesis draws arbitrary text, addresses, times and odd JSON values, mixed with
the inputs that once broke the gateway. A worker process is bound to the
simulator all along, so anything stored is also sent: one message it cannot
send would stop its loop, and the normal message at the end would never arrive.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone as django_timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from messaging.api import sending
from messaging.api.send_times import window
from messaging.models import LinkStatus, Message
from tests.conftest import wait_until

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]

EXAMPLES = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis directory in the tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ADDRESS = re.compile(r"[\x20-\x7e]{1,20}")

# Inputs that broke the gateway once (issue 18), and their neighbours.
HOSTILE = st.sampled_from(
    [
        "Ω",
        "😀",
        "\x00",
        "a\nb",
        "\t",
        "\x7f",
        "\ud800",
        "\ufffd",
        "+",
        "+44 7700",
        "x" * 21,
        "9" * 5000,
        "2020-13-45T00:00:00Z",
        "2020-02-30T10:00:00Z",
        "991399999999000+",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "990000000000000R",
        "000000000100000R",
        "nan",
        "inf",
        "-1",
        "ftp://h.example/",
        "http://127.0.0.1:8080/v1/send?api_key=sk_x",
        "javascript:alert(1)",
    ]
)
ANY_TEXT = st.text(st.characters(codec=None), max_size=30)  # surrogates and controls too
OFFSETS = st.integers(-14 * 60 + 1, 14 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
SOON = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31))
TIMES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.integers(0, 10**6).map(str),
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), st.datetimes(), OFFSETS),
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), SOON, OFFSETS),
    st.from_regex(r"\A[0-9]{12}[0-9][0-9]{2}[-+R]\Z"),
    st.from_regex(r"\A(2[6-8]|00)[01][0-9][0-3][0-9]{7}[0-4][0-9][-+R]\Z"),
)
VALUES = st.one_of(
    ANY_TEXT,
    HOSTILE,
    TIMES,
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ADDRESSES = st.one_of(
    st.sampled_from(["lisa", "bart", "5551234", "+447700900123", "MyShop", "A B-C_1"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=21),
)
# Parameters as a careful client sends them: each then gets a hostile value or two.
USUAL = st.fixed_dictionaries(
    {"dst": ADDRESSES, "text": st.text(max_size=400)},
    optional={
        "src": ADDRESSES,
        "enc": st.sampled_from(["auto", "gsm7", "ucs2", "latin1", "raw"]),
        "register": st.sampled_from(["final", "failure"]),
        "src_ton": st.sampled_from(["0", "1", "2", "5"]),
        "src_npi": st.sampled_from(["0", "1"]),
        "dst_ton": st.sampled_from(["0", "1", "2", "5"]),
        "dst_npi": st.sampled_from(["0", "1"]),
        "priority": st.sampled_from(["0", "1", "2", "3"]),
        "validity": TIMES,
        "schedule": TIMES,
        "reference": st.text(max_size=20),
        "callback_url": st.sampled_from(["https://hooks.example/sms", "http://h.example/?a=1"]),
        "wait": st.sampled_from(["0", "false", "0.02", "true"]),
        "dry_run": st.sampled_from(["", "0", "1"]),
    },
)
FIELDS = ["dst", "text", "src", "enc", "register", "src_ton", "src_npi", "dst_ton", "dst_npi"]
FIELDS += ["priority", "validity", "schedule", "reference", "callback_url", "wait", "dry_run"]
HOSTILE_VALUES = st.dictionaries(st.sampled_from(FIELDS), st.one_of(VALUES, TIMES), max_size=2)
PARAMS = st.builds(lambda usual, hostile: {**usual, **hostile}, USUAL, HOSTILE_VALUES)


@pytest.fixture
def worker_bound(simulator, start_worker, settings):
    """A worker bound to the simulator; requests wait for the SMSC only briefly."""
    settings.SMS_SEND_WAIT = 0.05
    start_worker(simulator.port)
    wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
    return simulator


def assert_no_server_error(status: int, body: dict) -> None:
    assert status < 500 or status == 502, (status, body)  # 502: the SMSC refused it
    if 400 <= status < 500:
        assert isinstance(body.get("error"), str) and body["error"], body
        assert sending.UNCHECKED not in body["error"], body  # a bug met while checking


def assert_stored_messages_can_be_sent() -> None:
    """What the worker will put in a submit_sm: addresses a C-octet string carries,
    times inside the window the store and SMPP hold."""
    now = django_timezone.now()
    for message in Message.objects.all():
        assert ADDRESS.fullmatch(message.dst), message.dst
        assert message.src == "" or ADDRESS.fullmatch(message.src), message.src
        if message.validity_until is not None:
            assert message.validity_until <= now + window(365 * 86400)
        if message.schedule_at is not None:
            assert abs(message.schedule_at - now) <= window(365 * 86400) + timedelta(minutes=5)


def assert_a_normal_message_is_delivered(api: APIClient) -> None:
    response = api.post("/v1/send", {"src": "bart", "dst": "lisa", "text": "still here"})
    assert response.status_code in (200, 202), response.content
    message_id = response.json()["id"]
    wait_until(
        lambda: Message.objects.get(pk=message_id).state == "delivered",
        timeout=30,
    )


def test_send_never_answers_5xx(worker_bound):
    api = APIClient(raise_request_exception=False)

    @EXAMPLES
    @given(params=PARAMS, as_form=st.booleans())
    def check(params, as_form):
        if as_form:
            body = urlencode(
                {k: str(v) for k, v in params.items()}, encoding="utf-8", errors="surrogatepass"
            )
            response = api.post("/v1/send", body, content_type="application/x-www-form-urlencoded")
        else:
            response = api.post("/v1/send", json.dumps(params), content_type="application/json")
        assert_no_server_error(response.status_code, response.json())

    check()
    assert_stored_messages_can_be_sent()
    assert_a_normal_message_is_delivered(api)


def test_batch_never_answers_5xx(worker_bound):
    api = APIClient(raise_request_exception=False)
    items = st.lists(st.one_of(PARAMS, VALUES), max_size=4)

    @EXAMPLES
    @given(items=items)
    def check(items):
        response = api.post("/v1/send/batch", json.dumps(items), content_type="application/json")
        body = response.json()
        assert_no_server_error(response.status_code, body)
        if response.status_code == 200:
            assert len(body["results"]) == len(items)
            for result in body["results"]:
                assert result["http_status"] in (202, 400), result
                assert_no_server_error(result["http_status"], result)

    check()
    assert_stored_messages_can_be_sent()
    assert_a_normal_message_is_delivered(api)


def test_sm_submit_never_answers_5xx(worker_bound):
    """``messaging.api.sending.send`` is what the JSON-RPC consumer calls for SM.Submit,
    with the frame's params as they were parsed: any JSON value may come."""

    @EXAMPLES
    @given(params=PARAMS)
    def check(params):
        answer = async_to_sync(sending.send)(params)
        assert_no_server_error(answer.status, answer.body)

    check()
    assert_stored_messages_can_be_sent()
    assert_a_normal_message_is_delivered(APIClient())
