"""GET /healthz and /readyz: liveness, and readiness with the reason when not ready."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from messaging.api.async_views import AsyncAPIView
from messaging.api.openapi import health_schema, readiness_schema
from messaging.health import bounded_readiness


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


async def readiness_response() -> Response:
    result = await bounded_readiness()
    return _no_store(Response(result.as_body(), status=200 if result.ready else 503))


@health_schema
class HealthView(AsyncAPIView):
    """GET /healthz: 200 while this process serves; ``?ready=1`` asks for readiness."""

    async def get(self, request: Request) -> Response:
        if request.query_params.get("ready", "").lower() in ("1", "true", "yes", "on"):
            return await readiness_response()
        return _no_store(Response({"status": "ok"}))


@readiness_schema
class ReadinessView(AsyncAPIView):
    """GET /readyz: 200 when the store answers and a worker is bound; 503 otherwise."""

    async def get(self, request: Request) -> Response:
        return await readiness_response()
