from django.urls import path

from . import views

urlpatterns = [
    path("v1/send", views.SendView.as_view(), name="send"),
    path("v1/query", views.QueryView.as_view(), name="query"),
    path("v1/messages", views.MessageListView.as_view(), name="messages"),
    path("v1/messages/<int:pk>", views.MessageDetailView.as_view(), name="message-detail"),
]
