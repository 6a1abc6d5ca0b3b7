"""The embedded SMSC simulator of ``manage.py serve --simulator``, as the dashboard sees it.

In the two-command demo the simulator runs inside the serve process and has no
control port, so nothing could make a handset send an incoming message. When
(and only when) serve runs it, serve registers it here; then
``POST /v1/simulator/mo`` injects an MO into it and the dashboard shows a small
"simulate an incoming message" form. With a real SMSC nothing is registered and
the endpoint answers 404 like any unknown path.

messaging never imports smpp_gateway at module level: the simulator is
described by the small ``InjectsMO`` protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from messaging.api.async_views import AsyncAPIView
from messaging.api.authentication import ApiKeyProtected
from sms.addresses import InvalidAddress, check_characters
from sms.encoding import resolve_encoding

MAX_TEXT = 1000  # characters: a handful of parts, enough to show reassembly


class InjectsMO(Protocol):
    """What this module needs of ``smpp_gateway.simulator.SMSCSimulator``."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def inject_mo(
        self, src: str, dst: str, text: str, encoding: str = ..., split: str = ...
    ) -> int: ...


_embedded: InjectsMO | None = None


def register(simulator: InjectsMO | None) -> None:
    """Called by ``serve --simulator`` (``None`` forgets it)."""
    global _embedded
    _embedded = simulator


def embedded() -> InjectsMO | None:
    """The simulator running in this process, if any."""
    return _embedded


async def inject(simulator: InjectsMO, src: str, dst: str, text: str) -> int:
    """Queue an incoming message on the simulator's own loop; returns its part count.

    Long texts come split with a UDH, as handsets send them, so the gateway's
    reassembly is what the dashboard shows.
    """
    encoding, _ = resolve_encoding(text, "auto")
    arguments: dict[str, Any] = dict(src=src, dst=dst, text=text, encoding=encoding, split="udh")
    loop = simulator.loop  # the simulator's methods are not thread-safe
    if loop is asyncio.get_running_loop():
        return simulator.inject_mo(**arguments)

    async def on_its_loop() -> int:
        return simulator.inject_mo(**arguments)

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_its_loop(), loop))


class SimulatedMOSerializer(serializers.Serializer):
    """The handset's number, the number it writes to, and what it writes."""

    src = serializers.CharField(error_messages={"required": 'missing parameter "src"'})
    dst = serializers.CharField(error_messages={"required": 'missing parameter "dst"'})
    text = serializers.CharField(
        max_length=MAX_TEXT,
        trim_whitespace=False,
        error_messages={"required": 'missing parameter "text"'},
    )

    def validate_src(self, value: str) -> str:
        return self._address(value, "src")

    def validate_dst(self, value: str) -> str:
        return self._address(value, "dst")

    @staticmethod
    def _address(value: str, name: str) -> str:
        try:
            return check_characters(value, name)
        except InvalidAddress as error:
            raise serializers.ValidationError(str(error)) from None


class SimulatorUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the embedded simulator is not running"


class SimulatedMOView(ApiKeyProtected, AsyncAPIView):
    """POST /v1/simulator/mo: a handset sends ``text`` from ``src`` to ``dst`` (demo only)."""

    schema = None  # not in /v1/schema: it exists only in the demo set-up

    async def post(self, request: Request) -> Response:
        simulator = embedded()
        if simulator is None:  # a real SMSC: this endpoint does not exist
            raise NotFound(f"no such endpoint: {request.path[:200]}")
        serializer = SimulatedMOSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            parts = await inject(simulator, data["src"], data["dst"], data["text"])
        except (AssertionError, RuntimeError) as error:  # not started, or stopping
            raise SimulatorUnavailable() from error
        return Response({"parts": parts}, status=status.HTTP_202_ACCEPTED)
