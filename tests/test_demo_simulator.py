"""POST /v1/simulator/mo: the demo's "simulate an incoming message" (issue 21).

It exists only while ``serve --simulator`` runs the simulator in-process
(``messaging.api.demo_simulator.register``); with a real SMSC it is a 404 like any
unknown path. The simulator here is real, on its own thread and loop (as the
view reaches it from another loop), over real TCP for what it sends.
"""

from __future__ import annotations

import json

import pytest

from messaging import api_keys
from messaging.api import demo_simulator
from messaging.api.dashboard import page_config
from smpp_gateway.simulator import SimulatorConfig, SimulatorThread

pytestmark = pytest.mark.django_db


@pytest.fixture
def embedded():
    with SimulatorThread(SimulatorConfig(port=0)) as smsc:
        demo_simulator.register(smsc.simulator)
        try:
            yield smsc
        finally:
            demo_simulator.register(None)


def post(client, body, **headers):
    return client.post(
        "/v1/simulator/mo", data=json.dumps(body), content_type="application/json", **headers
    )


def test_without_the_embedded_simulator_there_is_no_such_endpoint(client):
    response = post(client, {"src": "5559876", "dst": "5551234", "text": "hi"})
    assert response.status_code == 404
    assert response.json()["error"].startswith("no such endpoint")
    assert page_config()["simulator"] is False


def test_an_incoming_message_is_queued_in_the_simulator(client, embedded):
    assert page_config()["simulator"] is True
    response = post(client, {"src": "5559876", "dst": "5551234", "text": "✓ " + "x" * 200})
    assert response.status_code == 202, response.content
    assert response.json() == {"parts": 4}  # UCS-2 for the ✓, cut with a UDH as handsets do
    stats = embedded.stats()
    assert stats["mo_queued"] == 4 and stats["deliveries_waiting"] == 4


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"dst": "5551234", "text": "hi"}, 'missing parameter "src"'),
        ({"src": "5559876", "dst": "5551234", "text": ""}, 'invalid parameter "text"'),
        ({"src": "555\n9876", "dst": "5551234", "text": "hi"}, 'invalid parameter "src"'),
        ({"src": "5559876", "dst": "1" * 30, "text": "hi"}, 'invalid parameter "dst"'),
        ({"src": "5559876", "dst": "5551234", "text": "x" * 1001}, 'invalid parameter "text"'),
    ],
)
def test_bad_input_is_refused_and_injects_nothing(client, embedded, body, error):
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error), response.json()
    assert embedded.stats()["mo_queued"] == 0


@pytest.mark.django_db(transaction=True)  # /v1/send stores on a thread of its own
def test_keys_are_required_when_the_gateway_requires_them(client, embedded, settings):
    settings.SMSAPI_AUTH = "required"
    body = {"src": "5559876", "dst": "5551234", "text": "hi"}
    assert post(client, body).status_code == 401
    assert embedded.stats()["mo_queued"] == 0
    key = api_keys.create_key("demo").key
    response = post(client, body, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 202
    assert embedded.stats()["mo_queued"] == 1
