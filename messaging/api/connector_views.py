"""/v1/connectors and /v1/routes: SMSC connectors and routing rules, managed live.

Thin views over the store: the serializers check (with the store's own rules),
the worker(s) take a change up within ``SMPP_CONNECTOR_RELOAD`` seconds and
the API processes within a second. Who may: an API key with
``manage_connectors``; a staff user signed in to the admin may read (the API has
no CSRF check, so a cookie never writes: staff change them in the admin);
anyone while ``SMSAPI_AUTH=off`` (as for the rest of the API).
"""

from __future__ import annotations

from django.db import transaction
from rest_framework import generics, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from messaging import api_keys
from messaging.api.authentication import (
    QUERY_PARAMETER,
    ApiKeyAuthentication,
    StaffSessionReads,
)
from messaging.api.connector_serializers import (
    ConnectorSerializer,
    RouteCheckSerializer,
    RouteSerializer,
)
from messaging.api.throttling import ApiKeyRateThrottle
from messaging.connectors import explain_route, removal_problem, routing_cache
from messaging.models import Connector, Route

NOT_ALLOWED = "this needs an API key allowed to manage connectors (staff: read, or use the admin)"


class CanManageConnectors(BasePermission):
    message = NOT_ALLOWED

    def has_permission(self, request: Request, view) -> bool:
        if getattr(request.user, "is_staff", False):
            return True
        if request.auth is not None:
            return bool(getattr(request.auth, "manage_connectors", False))
        return not api_keys.auth_required()


class KeyIfGiven(ApiKeyAuthentication):
    """The API key when the request carries one; else nothing (a staff session may
    follow), and no key at all is the permission's 401."""

    def authenticate(self, request: Request):
        given = request.headers.get("Authorization") or request.query_params.get(QUERY_PARAMETER)
        return super().authenticate(request) if given else None


class ManagedView:
    """An API key, or (to read) a staff user's admin session; a change is seen here at once."""

    authentication_classes = [KeyIfGiven, StaffSessionReads]
    permission_classes = [CanManageConnectors]
    throttle_classes = [ApiKeyRateThrottle]
    lookup_field = "name"

    def perform_create(self, serializer) -> None:
        serializer.save()
        routing_cache.forget()

    def perform_update(self, serializer) -> None:
        serializer.save()
        routing_cache.forget()


class ConnectorList(ManagedView, generics.ListCreateAPIView):
    """GET|POST /v1/connectors"""

    queryset = Connector.objects.all()
    serializer_class = ConnectorSerializer
    pagination_class = None


class ConnectorDetail(ManagedView, generics.RetrieveUpdateDestroyAPIView):
    """GET|PATCH|PUT|DELETE /v1/connectors/<name>"""

    queryset = Connector.objects.all()
    serializer_class = ConnectorSerializer

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        connector = self.get_object()
        with transaction.atomic():
            problem = removal_problem(connector)
            if problem is None:
                connector.delete()
        if problem is not None:
            return Response({"error": problem}, status=status.HTTP_409_CONFLICT)
        routing_cache.forget()
        return Response(status=status.HTTP_204_NO_CONTENT)


class RouteList(ManagedView, generics.ListCreateAPIView):
    """GET|POST /v1/routes (in the order they are tried)"""

    queryset = Route.objects.prefetch_related("api_keys")
    serializer_class = RouteSerializer
    pagination_class = None


class RouteDetail(ManagedView, generics.RetrieveUpdateDestroyAPIView):
    """GET|PATCH|PUT|DELETE /v1/routes/<name>"""

    queryset = Route.objects.prefetch_related("api_keys")
    serializer_class = RouteSerializer

    def perform_destroy(self, route: Route) -> None:
        route.delete()
        routing_cache.forget()


class RouteCheck(ManagedView, generics.GenericAPIView):
    """GET /v1/routes/check?dst=...&src=...&key=<key prefix>: which connector a
    message would take now."""

    serializer_class = RouteCheckSerializer

    def get(self, request: Request) -> Response:
        question = RouteCheckSerializer(data=request.query_params)
        question.is_valid(raise_exception=True)
        data = question.validated_data
        key = data["key"]
        return Response(explain_route(data["dst"], data["src"], key.pk if key else None))
