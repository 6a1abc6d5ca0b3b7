"""Hostile input at the HTTP and JSON-RPC edge (issue 18).

Every case a client can send that once stopped the worker, stored what no store
can read back, or answered 500: here each gets a 4xx ``{"error": ...}`` and
stores nothing, through the real HTTP stack (DRF's test client, Django's ASGI
test client, and a daphne process for the end-to-end case). The rules behind
them (sms.addresses, messaging.api.send_times, messaging.api.json_input,
messaging.api.parsers) are tested on their own first.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError
from django.test import AsyncClient
from rest_framework.exceptions import ParseError
from rest_framework.test import APIClient

from messaging.api import sending
from messaging.api.json_input import JsonInputError, loads
from messaging.api.parsers import PayloadTooLarge, decode_body, read_body, strict_query_dict
from messaging.api.send_times import (
    MAX_WINDOW,
    InvalidTime,
    filter_moment,
    parse_time,
    schedule_time,
    validity_time,
    window,
)
from messaging.models import LinkStatus, Message
from sms.addresses import InvalidAddress, check_characters, clean_address
from tests.conftest import wait_until
from tests.live import WsClient, daphne

STORE = [pytest.mark.store, pytest.mark.django_db(transaction=True)]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


# --- the address rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ton", "npi", "stored"),
    [
        ("bart", 0, 0, "bart"),  # the seed's addresses, TON 0
        ("lisa", 0, 0, "lisa"),
        ("+44 20 7946", 0, 0, "+44 20 7946"),  # TON 0: printable ASCII as it is
        ("x" * 20, 0, 0, "x" * 20),
        ("+447700900123", 1, 1, "447700900123"),  # international: the + is dropped
        ("07700900123", 2, 1, "07700900123"),
        ("+" + "9" * 20, 1, 1, "9" * 20),
        ("+44abc", 1, 0, "+44abc"),  # digits only with NPI 1
        ("MyShop", 5, 0, "MyShop"),
        ("Shop_@ 2026", 5, 0, "Shop_@ 2026"),  # 11 GSM characters
        ("", 0, 0, ""),  # src may be absent
    ],
)
def test_addresses_smpp_can_carry(value, ton, npi, stored):
    assert clean_address(value, ton, npi, "dst") == stored


@pytest.mark.parametrize(
    ("value", "ton", "npi", "words"),
    [
        ("Ω", 0, 0, '"Ω" (U+03A9) at position 0'),
        ("hi😀", 0, 0, "U+1F600"),
        ("汉字", 0, 0, "U+6C49"),
        ("é", 0, 0, "U+00E9"),  # Latin-1, but no address character
        ("a\x00b", 0, 0, "U+0000 at position 1"),
        ("lisa\n", 0, 0, "U+000A"),
        ("\tlisa", 0, 0, "U+0009"),
        ("del\x7f", 0, 0, "U+007F"),
        ("x" * 21, 0, 0, "at most 20 characters (21 given)"),
        ("+" + "1" * 20, 0, 0, "at most 20 characters (21 given)"),  # TON 0 keeps the +
        ("+44abc", 1, 1, '"a" (U+0061)'),
        ("44 77", 2, 1, "U+0020"),
        ("+", 1, 1, "no digits"),
        ("+" + "1" * 21, 1, 1, "at most 20"),
        ("VeryLongSender", 5, 0, "at most 11 GSM characters (14 given"),
        ("Shop[]~^|{}", 5, 0, "(18 given"),  # extension characters count twice
        ("Shop`", 5, 0, "cannot be encoded in gsm7"),
    ],
)
def test_addresses_smpp_cannot_carry(value, ton, npi, words):
    with pytest.raises(InvalidAddress) as refused:
        clean_address(value, ton, npi, "dst")
    assert str(refused.value).startswith('invalid parameter "dst": ')
    assert words in str(refused.value)


def test_address_characters_are_checked_before_the_ton():
    assert check_characters("+" + "1" * 20, "src") == "+" + "1" * 20  # TON decides later
    with pytest.raises(InvalidAddress, match='"src"'):
        check_characters("Ω", "src")


# --- the time rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("60", NOW + timedelta(seconds=60)),
        ("2027-01-01T10:00:00Z", datetime(2027, 1, 1, 10, tzinfo=UTC)),
        ("2027-01-01T10:00:00+02:00", datetime(2027, 1, 1, 8, tzinfo=UTC)),
        ("2027-01-01 10:00", datetime(2027, 1, 1, 10, tzinfo=UTC)),  # no offset: UTC
        ("000001000000000R", NOW + timedelta(days=1)),
        ("270101100000004+", datetime(2027, 1, 1, 9, tzinfo=UTC)),  # 4 quarters ahead of UTC
        ("270101100000308-", datetime(2027, 1, 1, 12, 0, 0, 300000, tzinfo=UTC)),
    ],
)
def test_times_a_client_may_give(value, moment):
    parsed = parse_time(value, "validity", NOW)
    assert parsed == moment and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2020-13-45T00:00:00Z", "no such date or time"),
        ("2020-02-30T10:00:00Z", "no such date or time"),
        ("2027-01-01T25:00:00Z", "no such date or time"),
        ("991399999999000+", "no such date or time"),  # month 13 as an SMPP time
        ("270101100000049+", "no such date or time"),  # a UTC offset over 12 hours
        ("9999-12-31T23:59:59-14:00", "out of range"),  # year 10000 in UTC
        ("0001-01-01T00:00:00+14:00", "out of range"),  # year 0 in UTC
        ("tomorrow", "seconds, ISO 8601 or SMPP time expected"),
        ("-5", "seconds, ISO 8601 or SMPP time expected"),
        ("1" * 100, "seconds, ISO 8601 or SMPP time expected"),
    ],
)
def test_times_that_are_no_times(value, words):
    with pytest.raises(InvalidTime) as refused:
        parse_time(value, "validity", NOW)
    assert str(refused.value).startswith('invalid parameter "validity"')
    assert words in str(refused.value)


def test_schedule_and_validity_stay_within_their_window():
    assert schedule_time("3600", NOW, YEAR) == NOW + timedelta(hours=1)
    assert schedule_time("2026-12-03T11:00:00Z", NOW, YEAR) < NOW  # past: sent at once
    with pytest.raises(InvalidTime, match="more than 365 days ahead"):
        schedule_time("2028-01-01T00:00:00Z", NOW, YEAR)
    with pytest.raises(InvalidTime, match="more than 365 days ago"):
        schedule_time("2020-01-01T00:00:00Z", NOW, YEAR)
    assert validity_time("60", NOW, YEAR) == NOW + timedelta(seconds=60)
    with pytest.raises(InvalidTime, match="already passed"):
        validity_time("2026-12-03T11:00:00Z", NOW, YEAR)
    with pytest.raises(InvalidTime, match="already passed"):
        validity_time("0", NOW, YEAR)
    with pytest.raises(InvalidTime, match="SMS_MAX_VALIDITY"):
        validity_time("990000000000000R", NOW, YEAR)  # 99 years, relative


def test_an_operators_window_is_bounded():
    assert window(86400) == timedelta(days=1)
    assert window(10**15) == MAX_WINDOW  # still inside what every store holds
    assert window(float("inf")) == MAX_WINDOW
    assert window(float("nan")) == timedelta(0)
    assert window(-1) == timedelta(0)


def test_filter_moments():
    assert filter_moment("2026-12-03", "since") == datetime(2026, 12, 3, tzinfo=UTC)
    assert filter_moment("2026-12-03T10:00:00+01:00", "since") == datetime(
        2026, 12, 3, 9, tzinfo=UTC
    )
    for value in ("9999-12-31T23:59:59-14:00", "2020-13-45", "yesterday", "x" * 1000):
        with pytest.raises(InvalidTime, match='"since"'):
            filter_moment(value, "since")


# --- JSON, Idempotency-Key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("[" * 100_000, "nested deeper than 32 levels"),
        ("[" * 40 + "]" * 40, "nested deeper than 32 levels"),
        (b'{"text": "\xff"}', "not UTF-8 (byte 0xff at position 10)"),
        (b'{"text": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
        ('{"wait": NaN}', "NaN is not a JSON value"),
        ('{"wait": -Infinity}', "-Infinity is not a JSON value"),
        ('{"dst": ', "malformed JSON"),
    ],
)
def test_json_input_refuses(raw, words):
    with pytest.raises(JsonInputError) as refused:
        loads(raw, limit=32)
    assert words in str(refused.value)


def test_json_input_reads_what_it_should():
    assert loads(b'{"dst": "lisa", "text": "\xc3\xa9"}') == {"dst": "lisa", "text": "é"}
    nested = loads("[" * 32 + "]" * 32, limit=32)  # exactly the limit: read
    for _ in range(31):
        (nested,) = nested
    assert nested == []


def test_strict_form_decoding():
    data = strict_query_dict("dst=lisa&text=a+b%C3%A9&text=2&empty=", "utf-8", "request body")
    assert data.getlist("text") == ["a bé", "2"] and data["empty"] == ""
    assert strict_query_dict("text=%FF", "latin-1", "request body")["text"] == "ÿ"  # declared
    for text in ("text=%FF", "text=%C3", "t%FFxt=1", "text=%ED%A0%80"):
        with pytest.raises(ParseError, match="not valid UTF-8 once percent-decoded"):
            strict_query_dict(text, "utf-8", "request body")
    with pytest.raises(ParseError, match="not valid UTF-8: byte 0xff at position 3"):
        decode_body(b"abc\xffdef", "utf-8")


def test_bodies_are_read_within_the_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    assert read_body(io.BytesIO(b"x" * 10), None) == b"x" * 10
    with pytest.raises(PayloadTooLarge, match="at most 10 bytes"):
        read_body(io.BytesIO(b"x" * 11), None)  # longer than it said: still bounded


@pytest.mark.parametrize(
    ("key", "refused"),
    [
        (None, False),
        ("k1", False),
        ("k" * 128, False),
        ("order 42/7:a", False),
        ("k" * 129, True),
        ("k" * 200, True),
        ("a\x01b", True),
        ("line\n", True),
        ("é", True),  # a header's bytes past ASCII, read as Latin-1
    ],
)
def test_idempotency_key_rule(key, refused):
    assert (sending.idempotency_key_error(key) is not None) is refused


# --- /v1/send through HTTP -------------------------------------------------------------------

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=BoUnDaRy"


def multipart(*fields: tuple[str, bytes]) -> bytes:
    body = b"".join(
        b'--BoUnDaRy\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value)
        for name, value in fields
    )
    return body + b"--BoUnDaRy--\r\n"


def as_json(**params) -> bytes:
    return json.dumps({"text": "hi", "wait": "0", **params}).encode()


BIG = 3 * 1024 * 1024  # past DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)

HOSTILE_SENDS = [
    # (case, content type, body, status, words in the error)
    ("dst omega", FORM, b"dst=%CE%A9&text=x&wait=0", 400, '"dst": character "Ω"'),
    ("dst emoji", JSON, as_json(dst="😀"), 400, '"dst": character "😀"'),
    ("src not latin-1", JSON, as_json(dst="lisa", src="汉"), 400, '"src": character "汉"'),
    ("src latin-1", FORM, b"src=%C3%A9&dst=lisa&text=x", 400, '"src": character "é"'),
    ("dst NUL", JSON, as_json(dst="li\x00sa"), 400, '"dst"'),
    ("dst newline", FORM, b"dst=lisa%0A&text=x", 400, '"dst": character U+000A'),
    ("dst tab", JSON, as_json(dst="li\tsa"), 400, '"dst": character U+0009'),
    ("dst 21", JSON, as_json(dst="1" * 21), 400, '"dst": at most 20 characters'),
    ("dst 1 MB", JSON, as_json(dst="1" * 1_000_000), 400, '"dst": at most 20 characters'),
    (
        "international letters",
        JSON,
        as_json(dst="+44abc", dst_ton="1", dst_npi="1"),
        400,
        "digits only",
    ),
    ("alphanumeric 14", JSON, as_json(dst="lisa", src="VeryLongSender", src_ton="5"), 400, "11"),
    ("alphanumeric not gsm", JSON, as_json(dst="lisa", src="a`b", src_ton="5"), 400, "gsm7"),
    (
        "validity month 13",
        FORM,
        b"dst=lisa&text=x&validity=2020-13-45T00:00:00Z",
        400,
        '"validity"="2020-13-45T00:00:00Z": no such date',
    ),
    (
        "schedule feb 30",
        FORM,
        b"dst=lisa&text=x&schedule=2020-02-30T10:00:00Z",
        400,
        '"schedule"="2020-02-30T10:00:00Z": no such date',
    ),
    (
        "validity bad smpp",
        FORM,
        b"dst=lisa&text=x&validity=991399999999000%2B",
        400,
        '"validity"="991399999999000+"',
    ),
    (
        "validity year 10000",
        FORM,
        b"dst=lisa&text=x&validity=9999-12-31T23:59:59-14:00",
        400,
        "out of range",
    ),
    (
        "schedule year 10000",
        JSON,
        as_json(dst="lisa", schedule="9999-12-31T23:59:59-14:00"),
        400,
        "out of range",
    ),
    (
        "schedule far ahead",
        JSON,
        as_json(dst="lisa", schedule="2999-01-01T00:00:00Z"),
        400,
        "SMS_MAX_SCHEDULE_AHEAD",
    ),
    ("schedule 31 years", JSON, as_json(dst="lisa", schedule="999999999"), 400, "ahead"),
    ("validity past", JSON, as_json(dst="lisa", validity="2020-01-01T00:00:00Z"), 400, "passed"),
    (
        "validity 99 years",
        JSON,
        as_json(dst="lisa", validity="990000000000000R"),
        400,
        "SMS_MAX_VALIDITY",
    ),
    (
        "validity before schedule",
        JSON,
        as_json(dst="lisa", schedule="3600", validity="60"),
        400,
        'not after "schedule"',
    ),
    ("json 100000 deep", JSON, b"[" * 100_000, 400, "nested deeper than 32 levels"),
    ("json 40 deep", JSON, b'{"dst": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "nested deeper"),
    ("json NaN", JSON, b'{"dst": "lisa", "text": "x", "wait": NaN}', 400, "NaN"),
    ("json array", JSON, b'[{"dst": "lisa", "text": "x"}]', 400, "a JSON object"),
    ("json not utf-8", JSON, b'{"dst": "lisa", "text": "\xff"}', 400, "not valid UTF-8"),
    ("json latin-1", JSON, '{"dst": "lisa", "text": "é"}'.encode("latin-1"), 400, "UTF-8"),
    ("form not utf-8", FORM, b"dst=lisa&text=\xffx", 400, "not valid UTF-8: byte 0xff"),
    ("form %FF", FORM, b"dst=lisa&text=%FFx", 400, "not valid UTF-8 once percent-decoded"),
    (
        "multipart not utf-8",
        MULTIPART,
        multipart(("dst", b"lisa"), ("text", b"h\xffi")),
        400,
        "not valid UTF-8",
    ),
    ("priority 5000 digits", FORM, b"dst=lisa&text=x&priority=" + b"9" * 5000, 400, "priority"),
    ("ton 5000 digits", FORM, b"dst=lisa&text=x&src_ton=" + b"9" * 5000, 400, "src_ton"),
    # Found by tests/test_property_send.py: the error quoted the value, and a lone
    # surrogate cannot be written as UTF-8 (a 500). It is quoted as its escape.
    (
        "ton a surrogate",
        JSON,
        b'{"dst": "lisa", "text": "x", "src_ton": "\\ud800"}',
        400,
        '"\\ud800"',
    ),
    (
        "npi a surrogate",
        JSON,
        b'{"dst": "lisa", "text": "x", "dst_npi": "1\\udfff"}',
        400,
        "dst_npi",
    ),
    ("wait nan", FORM, b"dst=lisa&text=x&wait=nan", 400, '"wait"'),
    ("wait inf", FORM, b"dst=lisa&text=x&wait=inf", 400, '"wait"'),
    ("callback ftp", FORM, b"dst=lisa&text=x&callback_url=ftp://h.example/", 400, "http and https"),
    (
        "callback script",
        FORM,
        b"dst=lisa&text=x&callback_url=javascript:alert(1)",
        400,
        '"callback_url"',
    ),
    ("json 3 MB", JSON, as_json(dst="lisa", text="x" * BIG), 413, "too large"),
    ("form 3 MB", FORM, b"dst=lisa&text=" + b"x" * BIG, 413, "too large"),
    ("multipart 3 MB", MULTIPART, multipart(("dst", b"lisa"), ("text", b"x" * BIG)), 413, "large"),
]


@pytest.fixture
def api():
    return APIClient(raise_request_exception=False)


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [case[1:] for case in HOSTILE_SENDS],
    ids=[case[0] for case in HOSTILE_SENDS],
)
@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_hostile_send_is_refused_and_stores_nothing(api, content_type, body, status, words):
    response = api.post("/v1/send", body, content_type=content_type)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert words in error, error
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "query",
    ["dst=lisa&text=%FF", "dst=lisa&text=%C3", "dst=%E2%82&text=x", "dst=lisa&text=x&src=%FE%FF"],
)
@pytest.mark.store
@pytest.mark.django_db(transaction=True)
async def test_query_string_that_is_not_utf8_is_refused_under_asgi(query):
    """Django's ASGI request, where the query string's raw bytes are in the scope."""
    response = await AsyncClient().post(f"/v1/send?{query}&wait=0")
    assert response.status_code == 400
    assert "query string is not valid UTF-8" in response.json()["error"]
    assert await Message.objects.acount() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/send?dst=lisa&text=%FF",
        "/v1/send?dst=lisa&text=caf%C3",  # a sequence cut short
        "/v1/send?dst=li%ED%A0%80sa&text=x",  # an encoded surrogate
    ],
)
@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_query_string_that_is_not_utf8_is_refused(api, path):
    """Through the test client (WSGI); raw bytes are sent to daphne at the end."""
    response = api.post(path)
    assert response.status_code == 400
    assert "not valid UTF-8" in response.json()["error"]
    assert Message.objects.count() == 0


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_what_smpp_can_carry_is_stored_as_it_will_be_sent(api):
    response = api.post(
        "/v1/send",
        as_json(dst="+447700900123", dst_ton="1", dst_npi="1", src="MyShop", src_ton="5"),
        content_type=JSON,
    )
    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["id"])
    assert (message.dst, message.src) == ("447700900123", "MyShop")
    # A literal U+FFFD the client meant is kept: only the ones made up from bad bytes are refused.
    for content_type, body in (
        (FORM, b"dst=lisa&text=%EF%BF%BD&wait=0"),
        (MULTIPART, multipart(("dst", b"lisa"), ("text", "\ufffd".encode()), ("wait", b"0"))),
    ):
        response = api.post("/v1/send", body, content_type=content_type)
        assert response.status_code == 202, response.content
        assert Message.objects.get(pk=response.json()["id"]).text == "\ufffd"


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_callback_url_is_stored_without_its_api_key(api):
    response = api.post(
        "/v1/send",
        as_json(dst="lisa", callback_url="https://hooks.example/in?api_key=sk_secret&x=1"),
        content_type=JSON,
    )
    assert response.status_code == 202
    stored = Message.objects.get(pk=response.json()["id"]).callback_url
    assert "sk_secret" not in stored and stored.startswith("https://hooks.example/in?api_key=")


@pytest.mark.parametrize("key", ["k" * 129, "k" * 196, "k" * 300, "a\x01b", "tab\there", "é"])
@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_hostile_idempotency_key_is_refused(api, key):
    for path, body in (("/v1/send", as_json(dst="lisa")), ("/v1/send/batch", b'[{"dst": "1"}]')):
        response = api.post(path, body, content_type=JSON, HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 400, response.content
        assert "Idempotency-Key" in response.json()["error"]
    assert Message.objects.count() == 0


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_the_longest_idempotency_key_fits_the_store_with_an_api_key(api, settings):
    """196+ characters were a 503 on PostgreSQL (varchar(200) with "<key id>:")."""
    from messaging.api_keys import create_key

    settings.SMSAPI_AUTH = "required"
    issued = create_key("long-keys")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {issued.key}", "HTTP_IDEMPOTENCY_KEY": "k" * 128}
    first = api.post("/v1/send", as_json(dst="lisa"), content_type=JSON, **headers)
    again = api.post("/v1/send", as_json(dst="lisa"), content_type=JSON, **headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    items = json.dumps([{"dst": str(n), "text": "x"} for n in range(3)])
    batch = api.post("/v1/send/batch", items, content_type=JSON, **headers)
    assert [r["http_status"] for r in batch.json()["results"]] == [202, 202, 202]
    assert Message.objects.count() == 4


# --- /v1/send/batch ---------------------------------------------------------------------------


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_batch_answers_every_hostile_item_in_its_own_slot(api):
    items = [
        {"dst": "111", "text": "good one"},
        {"dst": "Ω", "text": "x"},
        {"dst": "222", "text": "x", "validity": "9999-12-31T23:59:59-14:00"},
        {"dst": "333", "text": "x", "schedule": "2020-02-30T10:00:00Z"},
        {"dst": "444", "text": "x", "validity": "991399999999000+"},
        {"dst": {"nested": {"deeper": [1, 2]}}, "text": "x"},
        {"dst": "555", "text": "x", "src": "li\nsa"},
        {"dst": "666", "text": "x", "callback_url": "file:///etc/passwd"},
        {"dst": "777", "text": "x", "priority": "9" * 5000},
        None,
        [],
        {"dst": "888", "text": "good two", "validity": "3600"},
    ]
    response = api.post("/v1/send/batch", json.dumps(items), content_type=JSON)
    assert response.status_code == 200, response.content
    body = response.json()
    statuses = [r["http_status"] for r in body["results"]]
    assert statuses == [202] + [400] * 10 + [202]
    assert (body["accepted"], body["rejected"]) == (2, 10)
    assert all(r["error"] for r in body["results"][1:-1])
    assert '"dst"' in body["results"][1]["error"] and "out of range" in body["results"][2]["error"]
    assert sorted(Message.objects.values_list("dst", flat=True)) == ["111", "888"]


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_a_batch_item_the_store_refuses_is_answered_alone():
    """An Idempotency-Key taken by a concurrent request between the batch's look-up and
    its insert: the one item replays the earlier message, the others are stored."""
    from messaging.api.serializers import send_serializer

    first = async_to_sync(sending.send)({"dst": "1", "text": "a", "wait": "0"}, "race")
    serializer = send_serializer()
    new = serializer.new_message(
        "race",
        sending._request_hash({"dst": "1", "text": "a", "wait": "0"}),
        None,
        data=serializer.run_validation({"dst": "1", "text": "a", "wait": "0"}),
    )
    replayed = sending._store_alone(new, new.request_hash)
    assert replayed["http_status"] == 202 and replayed["id"] == first.body["id"]
    other = serializer.new_message(
        "race", "another hash", None, data=serializer.run_validation({"dst": "2", "text": "b"})
    )
    assert sending._store_alone(other, "another hash")["http_status"] == 409
    assert Message.objects.count() == 1


# --- the JSON-RPC socket's entry -----------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"dst": "Ω", "text": "x"},
        {"dst": "lisa", "text": "x", "validity": "9999-12-31T23:59:59-14:00"},
        {"dst": "lisa", "text": "x", "schedule": "2020-02-30T10:00:00Z"},
        {"dst": ["lisa"], "text": {"a": 1}},
        {"dst": "lisa", "text": "x", "wait": float("nan")},
        {"dst": "lisa", "text": "x", "priority": "9" * 5000},
        {"dst": "lisa", "text": "x", "src_ton": -1},
        {"dst": "lisa", "text": "x", "callback_url": "gopher://h.example/"},
        {"dst": "lisa", "text": "\ud800"},
    ],
)
@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_sm_submit_entry_answers_hostile_params_with_a_400(params):
    """What the JSON-RPC consumer calls for SM.Submit: an answer, never an exception."""
    answer = async_to_sync(sending.send)(params)
    assert answer.status == 400 and answer.body["error"]
    assert sending.UNCHECKED not in answer.body["error"]
    assert Message.objects.count() == 0


# --- query and the message list -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/query?id=99999999999999999999", 404, "not found"),
        ("/v1/query?id=9223372036854775808", 404, "not found"),
        ("/v1/query?id=" + "9" * 5000, 400, "at most 255"),
        ("/v1/query?id=%C2%B9", 404, "not found"),  # "¹" is a digit to str.isdigit()
        ("/v1/query?message_id=a%00b", 400, "U+0000 not allowed"),
        ("/v1/query?message_id=a%0Ab", 400, "U+000A not allowed"),
        ("/v1/query?message_id=" + "x" * 300, 400, "at most 255"),
        ("/v1/query?message_id=%FF", 400, "not valid UTF-8"),
        ("/v1/messages?since=9999-12-31T23:59:59-14:00", 400, '"since"'),
        ("/v1/messages?until=2020-13-45", 400, '"until"'),
        ("/v1/messages?since=0001-01-01T00:00:00%2B14:00", 400, '"since"'),
        ("/v1/messages?status=bogus", 400, '"status"="bogus"'),
        ("/v1/messages?status=" + ",".join(["queued"] * 2000 + ["x"]), 400, '"status"="x"'),
        ("/v1/messages?dst=a%00b", 400, "NUL"),
        ("/v1/messages?dst=%FF", 400, "not valid UTF-8"),
        ("/v1/messages?page=99999999999999999999999", 404, "nvalid page"),
        ("/v1/messages/99999999999999999999", 404, "not found"),
        ("/v1/messages/9223372036854775808", 404, "not found"),
    ],
)
@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_hostile_query_and_list_parameters(api, path, status, words):
    response = api.get(path)
    assert response.status_code == status, response.content[:300]
    assert words in response.json()["error"]


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_query_parameters_in_a_json_body(api):
    """GET with a JSON body: DRF parses it, and its values reach the query too."""
    for params, words in (
        ({"message_id": "a\ud800b"}, "U+D800 not allowed"),
        ({"id": "1\u0000"}, "U+0000 not allowed"),
        ({"id": ["1"]}, "not found"),
        ({"message_id": {"a": 1}}, "not found"),
    ):
        response = api.generic("GET", "/v1/query", json.dumps(params), content_type=JSON)
        assert response.status_code in (400, 404) and words in response.json()["error"]


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_list_filters_still_work(api):
    sent = api.post("/v1/send", as_json(dst="111"), content_type=JSON).json()
    assert api.get("/v1/messages?status=queued,failed").json()["count"] == 1
    assert api.get("/v1/messages?since=2000-01-01&until=9999-12-31").json()["count"] == 1
    assert api.get("/v1/messages?since=9999-12-30T00:00:00Z").json()["count"] == 0
    assert api.get(f"/v1/query?id={sent['id']}").json()["status"] == "queued"


# --- a stored message is never answered with an error of ours ------------------------------


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_stored_then_read_back_fails_is_202_and_a_retry_finds_it(api, monkeypatch, settings):
    """The store commits; then reading the SMSC's answer back fails (the database goes
    away): the client gets 202 with the id, and retrying with its Idempotency-Key
    finds the message instead of sending it twice."""
    settings.SMS_SEND_WAIT = 0.2

    def database_gone(message_id):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sending, "_current_answer", database_gone)
    body = as_json(dst="lisa", wait="1")
    response = api.post("/v1/send", body, content_type=JSON, HTTP_IDEMPOTENCY_KEY="retry-1")
    assert response.status_code == 202, response.content
    stored = Message.objects.get()
    assert response.json()["id"] == str(stored.pk) and response.json()["message_id"] is None
    monkeypatch.undo()
    settings.SMS_SEND_WAIT = 0.2
    again = api.post("/v1/send", body, content_type=JSON, HTTP_IDEMPOTENCY_KEY="retry-1")
    assert again.status_code == 202 and again.json()["id"] == str(stored.pk)
    assert Message.objects.count() == 1


# --- end to end: a real server, a real worker, the simulator --------------------------------


def _raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (http.client would refuse a raw 0xFF in the path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_hostile_input_then_normal_messages_are_delivered(tmp_path, simulator, start_worker):
    """Against daphne and a worker process: every hostile request is a 4xx JSON and
    stores nothing; the worker then delivers a normal message and a batch's good items."""
    start_worker(simulator.port)
    with daphne(tmp_path, SMS_SEND_WAIT="5") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)

        def post(path: str, body: bytes, content_type: str, **headers: str):
            conn.request("POST", path, body, {"Content-Type": content_type, **headers})
            response = conn.getresponse()
            return response.status, json.loads(response.read())

        for _, content_type, body, status, words in HOSTILE_SENDS:
            if len(body) > 100_000:
                continue  # the big bodies: once is enough, below
            answer = post("/v1/send", body, content_type)
            assert answer[0] == status and words in answer[1]["error"], answer
        status, answer = post("/v1/send", as_json(dst="lisa", text="x" * BIG), JSON)
        assert status == 413 and "too large" in answer["error"]
        status, answer = post(
            "/v1/send", as_json(dst="lisa"), JSON, **{"Idempotency-Key": "k" * 196}
        )
        assert status == 400 and "Idempotency-Key" in answer["error"]
        status, answer = _raw_request(
            server.port,
            b"POST /v1/send?dst=lisa&text=\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        # daphne itself refuses a request line that is not ASCII (a bare 400); behind
        # another server, Django's ASGI request refuses it (smsapi.handlers: JSON).
        assert status == 400 and (not answer or "UTF-8" in json.loads(answer)["error"])
        assert Message.objects.count() == 0

        batch = [
            {"dst": "5550001", "text": "batch good"},
            {"dst": "Ω", "text": "poison"},
            {"dst": "5550002", "text": "x", "validity": "9999-12-31T23:59:59-14:00"},
        ]
        status, answer = post("/v1/send/batch", json.dumps(batch).encode(), JSON)
        assert status == 200
        assert [r["http_status"] for r in answer["results"]] == [202, 400, 400]

        socket_ = WsClient(server.port, "/v1/ws/jsonrpc")
        hostile_calls = [
            {"dst": "Ω", "text": "x"},
            {"dst": "lisa", "text": "x", "validity": "9999-12-31T23:59:59-14:00"},
            {"dst": "lisa", "text": "x", "schedule": "2020-02-30T10:00:00Z"},
        ]
        for n, params in enumerate(hostile_calls):
            socket_.send_json({"method": "SM.Submit", "params": [params], "id": n})
        socket_.send_text("[" * 1000 + "]" * 1000)  # a frame nested too deep
        answers = [socket_.receive_json() for _ in range(len(hostile_calls) + 1)]
        socket_.close()
        assert all(a["result"] is None and a["error"].startswith("400 ") for a in answers)
        assert Message.objects.count() == 1  # the batch's good item

        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
        status, answer = post("/v1/send", b"src=bart&dst=lisa&text=hi", FORM)
        assert status == 200, answer
        assert answer["message_id"]
        wait_until(lambda: Message.objects.filter(state="delivered").count() == 2, timeout=30)
        conn.close()
    sent = sorted((r.destination_addr, r.short_message) for r in simulator.submits())
    assert sent == [("5550001", b"batch good"), ("lisa", b"hi")]
