"""The OpenAPI schema: it is valid, its docs work offline, and fuzzing the API it
describes (schemathesis, in process) never gets a server error."""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
import yaml
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from messaging.models import LinkStatus

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]

SCHEMA_URL = "/v1/schema"


def test_schema_is_valid_openapi_in_yaml_and_json(client):
    as_yaml = client.get(SCHEMA_URL)
    assert as_yaml.status_code == 200
    spec = yaml.safe_load(as_yaml.content)
    validate(spec)
    as_json = client.get(SCHEMA_URL, {"format": "json"})
    assert as_json.status_code == 200
    assert json.loads(as_json.content) == spec
    paths = set(spec["paths"])
    assert {"/v1/send", "/v1/query", "/v1/messages", "/v1/messages/{id}"} <= paths
    assert {"/healthz", "/readyz", "/metrics", "/v1/status"} <= paths
    status = spec["paths"]["/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]
    assert status["schema"]["$ref"].endswith("/Status")
    assert set(spec["components"]["schemas"]["Status"]["properties"]) == {
        "link",
        "counts",
        "last_event_id",
    }
    send = spec["paths"]["/v1/send"]["post"]
    assert set(send["responses"]) == {"200", "202", "400", "401", "409", "429", "502", "503"}
    query = spec["paths"]["/v1/query"]["get"]["responses"]
    assert set(query) == {"200", "400", "401", "404", "429"}
    # Every send parameter the API validates is described.
    from messaging.api.serializers import SendSerializer

    described = spec["components"]["schemas"]["SendRequest"]["properties"]
    assert set(described) == set(SendSerializer().fields)


def test_docs_pages_load_their_assets_locally(client):
    """Swagger UI and Redoc work with no internet: every asset is one of ours."""
    for page in ("/v1/docs", "/v1/redoc"):
        response = client.get(page)
        assert response.status_code == 200
        html = response.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/static/"), asset
            assert client.get(asset).status_code == 200, asset
    assert client.get("/static/admin/css/base.css").status_code == 200


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_finds_no_server_error(settings, mode):
    """Every operation, valid and invalid input: any answer but a 5xx."""
    settings.SMS_SEND_WAIT = 0.1  # no worker here: a waiting send would only time out
    now = timezone.now()  # a worker that is bound, so /readyz is 200 rather than 503
    LinkStatus.objects.create(worker_id="w1", state="bound", changed_at=now, heartbeat_at=now)
    schema = schemathesis.openapi.from_wsgi(f"{SCHEMA_URL}?format=json", get_wsgi_application())
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error])

        try:
            fuzz()
        except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
            assert mode == GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # report every failing operation, not just the first
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
