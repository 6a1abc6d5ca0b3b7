"""/v1/send and /v1/query input handling: the seed's rules, error texts and formats."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from messaging.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client():
    return APIClient()


SEED_ERRORS = [
    ({"text": "hi"}, 'missing parameter "dst": number of recipient'),
    ({"dst": "", "text": "hi"}, 'missing parameter "dst": number of recipient'),
    ({"dst": "lisa"}, 'missing parameter "text": text message'),
    (
        {"dst": "lisa", "text": "hi", "enc": "utf9"},
        'invalid parameter "enc"="utf9"; supported: auto, gsm7, ucs2, latin1, raw',
    ),
    (
        {"dst": "lisa", "text": "hi", "register": "always"},
        'invalid parameter "register"="always"; supported: final, failure',
    ),
    (
        {"dst": "lisa", "text": "hi", "src_ton": "x"},
        'invalid parameter "src_ton"="x": must be a number from 0 to 255',
    ),
    (
        {"dst": "lisa", "text": "hi", "src_npi": "256"},
        'invalid parameter "src_npi"="256": must be a number from 0 to 255',
    ),
    # First error wins, in the seed's order.
    ({"enc": "bogus", "register": "bogus"}, 'missing parameter "dst": number of recipient'),
    (
        {"dst": "lisa", "text": "hi", "enc": "bogus", "register": "bogus"},
        'invalid parameter "enc"="bogus"; supported: auto, gsm7, ucs2, latin1, raw',
    ),
]


@pytest.mark.parametrize(("params", "error"), SEED_ERRORS)
def test_seed_validation_errors(client, params, error):
    response = client.post("/v1/send", params, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert Message.objects.count() == 0


def test_character_outside_latin1_is_refused_by_name(client):
    response = client.post("/v1/send", {"dst": "lisa", "text": "5 €", "enc": "latin1"})
    assert response.status_code == 400
    assert "€" in response.json()["error"] and "U+20AC" in response.json()["error"]
    assert Message.objects.count() == 0


@pytest.mark.parametrize("field", ["src", "dst", "text", "reference"])
def test_a_lone_surrogate_is_refused_as_drf_refuses_it(client, field):
    """Our check in C gives DRF's own error (its validator, run here for comparison)."""
    from rest_framework.exceptions import ValidationError
    from rest_framework.validators import ProhibitSurrogateCharactersValidator

    value = "ab\udc9dcd"
    with pytest.raises(ValidationError) as drf:
        ProhibitSurrogateCharactersValidator()(value)
    body = json.dumps({"dst": "lisa", "text": "hi", field: value})  # JSON's "\udc9d"
    response = client.post("/v1/send", body, content_type="application/json")
    assert response.status_code == 400
    assert drf.value.detail[0] == "Surrogate characters are not allowed: U+DC9D."
    assert response.json() == {"error": f'invalid parameter "{field}": {drf.value.detail[0]}'}
    assert Message.objects.count() == 0


def test_too_many_parts_says_how_many(client, settings):
    settings.SMS_MAX_PARTS = 2
    response = client.post("/v1/send", {"dst": "lisa", "text": "x" * 500, "wait": "0"})
    assert response.status_code == 400
    assert "4 parts" in response.json()["error"]
    assert Message.objects.count() == 0


@pytest.mark.parametrize("fmt", ["form", "multipart", "json", "query"])
def test_every_input_format_is_accepted(client, fmt):
    params = {"src": "bart", "dst": "lisa", "text": "hi", "wait": "0"}
    if fmt == "json":
        response = client.post("/v1/send", json.dumps(params), content_type="application/json")
    elif fmt == "query":
        response = client.post("/v1/send?src=bart&dst=lisa&text=hi&wait=0")
    elif fmt == "form":
        response = client.post(
            "/v1/send",
            "src=bart&dst=lisa&text=hi&wait=0",
            content_type="application/x-www-form-urlencoded",
        )
    else:
        response = client.post("/v1/send", params, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["message_id"] is None and body["status"] == "queued"
    message = Message.objects.get(pk=body["id"])
    assert (message.src, message.dst, message.text) == ("bart", "lisa", "hi")


def test_put_sends_too(client):
    response = client.put("/v1/send?dst=lisa&text=hi&wait=0")
    assert response.status_code == 202


def test_default_encoding_is_auto(client):
    body = client.post("/v1/send", {"dst": "lisa", "text": "hi 😀", "wait": "0"}).json()
    assert body["encoding"] == "ucs2" and body["ucs2_forced_by"] == ["😀"]
    body = client.post("/v1/send", {"dst": "lisa", "text": "hi €", "wait": "0"}).json()
    assert body["encoding"] == "gsm7"


def test_dry_run_stores_nothing(client):
    response = client.post("/v1/send", {"dst": "lisa", "text": "x" * 200, "dry_run": "1"})
    assert response.status_code == 200
    assert response.json()["parts"] == 2 and response.json()["encoding"] == "gsm7"
    assert Message.objects.count() == 0


def test_wrong_method_is_405_with_allow(client):
    response = client.get("/v1/send")
    assert response.status_code == 405
    assert "POST" in response["Allow"] and "PUT" in response["Allow"]
    response = client.post("/v1/query")
    assert response.status_code == 405 and "GET" in response["Allow"]


def test_query_needs_an_id(client):
    response = client.get("/v1/query?src=bart")
    assert response.status_code == 400
    assert response.json() == {"error": 'missing parameter "message_id": message id from send'}


def test_query_unknown_is_404(client):
    assert client.get("/v1/query?message_id=nope").status_code == 404
    assert client.get("/v1/query?id=999999").status_code == 404
    assert client.head("/v1/query?id=999999").status_code == 404


def test_query_by_our_id_of_a_queued_message(client):
    sent = client.post("/v1/send", {"dst": "lisa", "text": "hi", "wait": "0"}).json()
    body = client.get(f"/v1/query?id={sent['id']}").json()
    assert list(body)[:3] == ["message_state", "final_date", "error_code"]
    # Never submitted: not claimed to be with the SMSC (issue 21).
    assert body["message_state"] == "SCHEDULED" and body["status"] == "queued"


def test_idempotency_key(client):
    params = {"dst": "lisa", "text": "hi", "wait": "0"}
    first = client.post("/v1/send", params, HTTP_IDEMPOTENCY_KEY="k1").json()
    again = client.post("/v1/send", params, HTTP_IDEMPOTENCY_KEY="k1").json()
    assert again["id"] == first["id"] and Message.objects.count() == 1
    other = client.post("/v1/send", {**params, "text": "other"}, HTTP_IDEMPOTENCY_KEY="k1")
    assert other.status_code == 409 and Message.objects.count() == 1


def test_messages_list_filters_and_detail(client):
    client.post("/v1/send", {"dst": "111", "text": "a", "reference": "r1", "wait": "0"})
    client.post("/v1/send", {"dst": "222", "text": "b", "wait": "0"})
    body = client.get("/v1/messages?dst=111").json()
    assert body["count"] == 1 and body["results"][0]["reference"] == "r1"
    assert client.get("/v1/messages?status=delivered").json()["count"] == 0
    assert client.get("/v1/messages?reference=r1").json()["count"] == 1
    bad = client.get("/v1/messages?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    detail = client.get(f"/v1/messages/{body['results'][0]['id']}").json()
    assert detail["history"][0]["to_state"] == "queued"
    assert detail["part_details"][0]["state"] == "queued"
    missing = client.get("/v1/messages/999999")
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_batch_answers_per_item_in_order(client):
    items = [
        {"dst": "111", "text": "one"},
        {"text": "no destination"},
        "not an object",
        {"dst": "222", "text": "5 €", "enc": "latin1"},
        {"dst": "333", "text": "three", "reference": "r3"},
    ]
    response = client.post("/v1/send/batch", json.dumps(items), content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    statuses = [r["http_status"] for r in body["results"]]
    assert statuses == [202, 400, 400, 400, 202]
    assert body["results"][1]["error"] == 'missing parameter "dst": number of recipient'
    assert "U+20AC" in body["results"][3]["error"]
    stored = Message.objects.order_by("id")
    assert [m.dst for m in stored] == ["111", "333"]
    assert str(stored[1].pk) == body["results"][4]["id"]


def test_batch_limits_and_shape(client, settings):
    settings.SMS_BATCH_MAX = 2
    three = json.dumps([{"dst": "1", "text": "a"}] * 3)
    response = client.post("/v1/send/batch", three, content_type="application/json")
    assert response.status_code == 400 and "at most 2" in response.json()["error"]
    response = client.post("/v1/send/batch", "{}", content_type="application/json")
    assert response.status_code == 400
    assert Message.objects.count() == 0


def test_batch_idempotency_key_never_sends_twice(client):
    items = json.dumps([{"dst": "1", "text": "a"}, {"dst": "2", "text": "b"}])
    first = client.post(
        "/v1/send/batch", items, content_type="application/json", HTTP_IDEMPOTENCY_KEY="b1"
    ).json()
    again = client.post(
        "/v1/send/batch", items, content_type="application/json", HTTP_IDEMPOTENCY_KEY="b1"
    ).json()
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    assert Message.objects.count() == 2
