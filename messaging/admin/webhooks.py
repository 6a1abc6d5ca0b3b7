"""The admin pages of webhook deliveries: every delivery with each of its attempts.

Read-only, like the rest of the message log: a delivery is what happened to
one POST. Registered by ``messaging.admin``.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from messaging.admin.base import EstimatedCountPaginator, ReadOnlyAdminMixin, ReadOnlyInline
from messaging.events import event_json
from messaging.models import WebhookAttempt, WebhookDelivery
from messaging.url_secrets import loggable_url

WEBHOOK_COLORS = {
    WebhookDelivery.State.PENDING: "#0d6efd",
    WebhookDelivery.State.DELIVERED: "#198754",
    WebhookDelivery.State.FAILED: "#dc3545",
}


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ["number", "at", "status_code", "error", "duration_ms", "response_excerpt"]
    readonly_fields = fields
    ordering = ["id"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "state_label",
        "event_link",
        "event_type",
        "message_link",
        "shown_url",
        "attempts",
        "last_status",
        "last_error",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["state", "event__type", "created_at"]
    search_fields = ["url", "=event__id", "=event__message__id"]
    list_select_related = ["event"]
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-id"]
    fields = [
        "state",
        "shown_url",
        "event_link",
        "event_type",
        "message_link",
        "api_key",
        "attempts",
        "last_status",
        "last_error",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "payload",
    ]
    readonly_fields = fields
    inlines = [WebhookAttemptInline]

    @admin.display(description="state", ordering="state")
    def state_label(self, delivery: WebhookDelivery) -> str:
        return format_html(
            '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
            WEBHOOK_COLORS.get(delivery.state, "#6c757d"),
            delivery.state,
        )

    @admin.display(description="URL", ordering="url")
    def shown_url(self, delivery: WebhookDelivery) -> str:
        # Stored URLs have no API key since they are redacted on the way in; older
        # rows may, and a receiver's password is never shown.
        return loggable_url(delivery.url)

    @admin.display(description="event", ordering="event_id")
    def event_link(self, delivery: WebhookDelivery) -> str:
        url = reverse("admin:messaging_event_change", args=[delivery.event_id])
        return format_html('<a href="{}">{}</a>', url, delivery.event_id)

    @admin.display(description="type", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="message")
    def message_link(self, delivery: WebhookDelivery) -> str:
        message_id = delivery.event.message_id
        if message_id is None:
            return "-"
        url = reverse("admin:messaging_message_change", args=[message_id])
        return format_html('<a href="{}">{}</a>', url, message_id)

    @admin.display(description="payload (as posted)")
    def payload(self, delivery: WebhookDelivery) -> str:
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", event_json(delivery.event))
