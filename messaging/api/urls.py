from django.urls import path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from messaging.api import connector_views, views
from messaging.api.dashboard import dashboard
from messaging.api.demo_simulator import SimulatedMOView
from messaging.api.status_view import status_view

urlpatterns = [
    path("v1/send", views.SendView.as_view(), name="send"),
    path("v1/send/batch", views.SendBatchView.as_view(), name="send-batch"),
    path("v1/query", views.QueryView.as_view(), name="query"),
    path("v1/messages", views.MessageListView.as_view(), name="messages"),
    path("v1/messages/<int:pk>", views.MessageDetailView.as_view(), name="message-detail"),
    path("v1/status", status_view, name="status"),
    path("v1/connectors", connector_views.ConnectorList.as_view(), name="connectors"),
    path(
        "v1/connectors/<str:name>",
        connector_views.ConnectorDetail.as_view(),
        name="connector-detail",
    ),
    path("v1/routes", connector_views.RouteList.as_view(), name="routes"),
    path("v1/routes/check", connector_views.RouteCheck.as_view(), name="route-check"),
    path("v1/routes/<str:name>", connector_views.RouteDetail.as_view(), name="route-detail"),
    # Exists only while `serve --simulator` runs the simulator in-process (404 otherwise).
    path("v1/simulator/mo", SimulatedMOView.as_view(), name="simulator-mo"),
    path("v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("v1/docs/", RedirectView.as_view(pattern_name="docs", permanent=True)),
    path("v1/redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", dashboard, name="dashboard"),
]
