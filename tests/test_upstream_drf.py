"""upstream.drf: the awaited copy of APIView.dispatch and the serializer's fewer skips.

Fails when DRF changes what was copied or relied on; checks that on another DRF
the views and serializers do what DRF does (with a warning), with the same answers.
"""

from __future__ import annotations

import hashlib
import inspect
import logging

import pytest
from asgiref.sync import sync_to_async
from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

import upstream
from messaging.api.serializers import SendSerializer
from upstream import drf

# sha256 (first 16 hex digits) of the source read when the copy was made (DRF 3.18.3).
UPSTREAM_SOURCE = {
    "APIView.dispatch": "3472ce1459213705",
    "Serializer.to_internal_value": "ad970fd92d22492a",
    "Serializer._read_only_defaults": "ff4926d1c3044bd0",
}


def source_hash(func) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]


def test_the_copied_code_is_still_drfs():
    """A new DRF: compare its ``dispatch`` and ``to_internal_value`` with the
    copies in upstream/drf.py, carry its changes over, then record the new hashes."""
    assert drf.awaits_dispatch() and drf.skips_absent_fields()
    found = {
        "APIView.dispatch": source_hash(APIView.dispatch),
        "Serializer.to_internal_value": source_hash(serializers.Serializer.to_internal_value),
        "Serializer._read_only_defaults": source_hash(serializers.Serializer._read_only_defaults),
    }
    assert found == UPSTREAM_SOURCE


def test_what_the_copies_rely_on_is_there():
    for name in ("initialize_request", "initial", "handle_exception", "finalize_response"):
        assert callable(getattr(APIView, name)), name
    assert isinstance(serializers.Serializer._writable_fields, property)
    assert callable(serializers.Serializer.set_value)
    # DRF's run_validators still asks for the read-only defaults (the override's hook).
    assert "self._read_only_defaults()" in inspect.getsource(serializers.Serializer.run_validators)


class _View(drf.AwaitedAPIView):
    authentication_classes: list = []
    permission_classes: list = []

    def run_sync(self, func):
        return sync_to_async(func, thread_sensitive=False)

    async def get(self, request):
        return Response({"handler": "coroutine"})

    def post(self, request):
        return Response({"handler": "plain", "data": dict(request.data)}, status=201)


async def _answers() -> list[tuple[int, bytes, str]]:
    factory = APIRequestFactory()
    view = _View.as_view()
    answers = []
    for request in (factory.get("/"), factory.post("/", {"a": "b"}, format="json")):
        response = await view(request)
        assert isinstance(response, HttpResponse)
        answers.append((response.status_code, response.content, response["Content-Type"]))
    return answers


EXPECTED = [
    (200, b'{"handler":"coroutine"}', "application/json"),
    (201, b'{"handler":"plain","data":{"a":"b"}}', "application/json"),
]


async def test_the_awaited_view_answers_as_drf():
    assert await _answers() == EXPECTED


async def test_on_another_drf_the_view_runs_drfs_dispatch_with_a_warning(another_version, caplog):
    with caplog.at_level(logging.WARNING, logger="upstream"):
        assert await _answers() == EXPECTED
    assert "APIView.dispatch" in caplog.text


INPUTS = [
    {"dst": "5550001", "text": "hi"},
    {"dst": "5550001", "text": "hi", "src": "5550002", "priority": "2", "wait": "0"},
    {"text": "hi"},
    {"dst": "5550001", "text": "hi", "src_ton": "256", "enc": "nope"},
]


def _results() -> list:
    results = []
    for data in INPUTS:
        serializer = SendSerializer(data=data)
        valid = serializer.is_valid()
        results.append((valid, serializer.validated_data if valid else serializer.errors))
    return results


@pytest.mark.django_db
def test_on_another_drf_the_serializer_is_drfs_with_the_same_results(another_version, caplog):
    upstream._warn_once.cache_clear()
    fast = []
    for data in INPUTS:  # as written for: the fewer-skips path
        serializer = SendSerializer(data=data)
        serializer._skips_absent_fields = True
        valid = serializer.is_valid()
        fast.append((valid, serializer.validated_data if valid else serializer.errors))
    with caplog.at_level(logging.WARNING, logger="upstream"):
        assert _results() == fast
    assert "Serializer.to_internal_value" in caplog.text
