"""The message log's pages: messages, incoming messages, receipts, link status, events.

Nothing here edits a record: a message, its parts, receipts and timeline are
what happened, and changing them by hand would make them lie. The only writes
are the two operator actions, which go through ``messaging.operator_actions``
and so through the state machine, with a transition and an event each.

Built for a store of millions of rows: no full count on PostgreSQL (the
planner's estimate is used for an unfiltered list), related rows prefetched so
a page costs the same number of queries whatever its length, date filters
rather than date hierarchies (whose links scan the table), and searches that
go through an index (the text is searched only when nothing matches exactly).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from messaging.admin.base import (
    EstimatedCountPaginator,
    ReadOnlyAdminMixin,
    ReadOnlyInline,
    state_badge,
    status_label,
)
from messaging.models import (
    Connector,
    Event,
    IncomingFragment,
    IncomingMessage,
    LinkStatus,
    Message,
    MessagePart,
    Receipt,
    StateTransition,
)
from messaging.operator_actions import cancel_queued, resend_failed
from messaging.routing import DEFAULT_CONNECTOR, public_name, stored_name
from messaging.states import State
from smpp.smsc_ids import match_keys

SMSC_IDS_SHOWN = 2  # in the message list; the message page lists them all

SEARCH_ID_LIMIT = 1000  # messages one SMSC id search may find (ids repeat only across SMSCs)
LINK_COLORS = {"bound": "#198754", "connecting": "#0d6efd", "disconnected": "#dc3545"}


# --- filters ----------------------------------------------------------------------------


class CommandStatusFilter(admin.SimpleListFilter):
    """The SMPP errors failed messages ended with, by name."""

    title = "command status"
    parameter_name = "command_status"

    def lookups(self, request, model_admin):
        # Only failed messages carry an error code: message_failed_status_idx
        # holds them and nothing else.
        codes = (
            Message.objects.filter(state=State.FAILED, command_status__isnull=False)
            .order_by()
            .values_list("command_status", flat=True)
            .distinct()
        )
        return [(str(code), status_label(code)) for code in sorted(codes)]

    def has_output(self) -> bool:
        # Applied even when no failed message is left, so that a filtered link
        # never silently shows every message.
        return bool(self.lookup_choices) or self.value() is not None

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not (value.isascii() and value.isdigit()):
            return queryset.none()
        return queryset.filter(state=State.FAILED, command_status=int(value))


class MatchedFilter(admin.SimpleListFilter):
    title = "matched"
    parameter_name = "matched"

    def lookups(self, request, model_admin):
        return [("yes", "matched"), ("no", "unmatched")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(matched_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(matched_at__isnull=True)
        return queryset


class ReceiptStatFilter(admin.SimpleListFilter):
    """The receipt stat values of SMPP 3.4 appendix B (a fixed list: no table scan)."""

    title = "stat"
    parameter_name = "stat"
    STATS = ("DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE")

    def lookups(self, request, model_admin):
        return [(stat, stat) for stat in self.STATS]

    def queryset(self, request, queryset):
        return queryset.filter(stat=self.value()) if self.value() else queryset


# --- messages ---------------------------------------------------------------------------


class ConnectorColumn:
    """The connector of a message, part, incoming message or link, as people call it."""

    @admin.display(description="connector", ordering="connector")
    def connector_name(self, record) -> str:
        return public_name(record.connector)


class ConnectorFilter(admin.SimpleListFilter):
    """By connector: the choices come from the connectors table, not from a scan
    of the messages."""

    title = "connector"
    parameter_name = "connector"

    def lookups(self, request, model_admin):
        names = [DEFAULT_CONNECTOR, *Connector.objects.values_list("name", flat=True)]
        return [(public_name(name), public_name(name)) for name in names]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(connector=stored_name(value))


class PartInline(ConnectorColumn, ReadOnlyInline):
    model = MessagePart
    fields = readonly_fields = [
        "index",
        "state_label",
        "smsc_id",
        "status",
        "error_code",
        "attempts",
        "possibly_duplicated",
        "worker",
        "connector_name",
        "bind_id",
        "sequence_number",
        "next_attempt_at",
        "submitted_at",
        "final_at",
        "octets",
    ]
    ordering = ["index"]

    @admin.display(description="state")
    def state_label(self, part: MessagePart) -> str:
        return state_badge(part.state)

    @admin.display(description="command status")
    def status(self, part: MessagePart) -> str:
        return status_label(part.command_status)

    @admin.display(description="short_message (hex)")
    def octets(self, part: MessagePart) -> str:
        return bytes(part.short_message).hex(" ")


class ReceiptInline(ReadOnlyInline):
    model = Receipt
    fk_name = "message"
    fields = readonly_fields = [
        "smsc_id",
        "part_index",
        "stat",
        "message_state",
        "error_code",
        "submitted_date",
        "done_date",
        "received_at",
        "matched_at",
        "raw_text",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("part").order_by("id")

    @admin.display(description="part")
    def part_index(self, receipt: Receipt) -> int | None:
        return receipt.part.index if receipt.part else None


class TimelineInline(ReadOnlyInline):
    model = StateTransition
    verbose_name = "transition"
    verbose_name_plural = "timeline"
    fields = readonly_fields = ["at", "part_index", "from_state", "to_state", "status", "detail"]
    ordering = ["at", "id"]

    @admin.display(description="command status")
    def status(self, transition: StateTransition) -> str:
        return status_label(transition.command_status)


@admin.register(Message)
class MessageAdmin(ConnectorColumn, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "state_label",
        "dst",
        "src",
        "parts_count",
        "encoding",
        "smsc_ids",
        "connector_name",
        "created_at",
        "final_at",
        "status",
    ]
    # A date filter rather than a date hierarchy: the hierarchy's links cost a
    # DISTINCT over the whole table on every page.
    list_filter = [
        "state",
        CommandStatusFilter,
        ConnectorFilter,
        "possibly_duplicated",
        "created_at",
    ]
    search_help_text = (
        "Exact destination, reference, SMSC id or our id; when none matches, any part of "
        "the text (slow on a big store)."
    )
    search_fields = ["dst"]  # shows the search box; get_search_results does the work
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-id"]
    actions = ["resend_failed_messages", "cancel_queued_messages"]
    inlines = [PartInline, ReceiptInline, TimelineInline]
    fieldsets = [
        (None, {"fields": ["state_label", "status", "error_code", "possibly_duplicated"]}),
        ("Addresses", {"fields": ["src", "src_ton", "src_npi", "dst", "dst_ton", "dst_npi"]}),
        (
            "Content",
            {
                "fields": [
                    "text",
                    "encoding",
                    "requested_encoding",
                    "data_coding",
                    "ucs2_forced_by",
                    "parts_count",
                ]
            },
        ),
        (
            "Delivery",
            {
                "fields": [
                    "connector_name",
                    "register",
                    "priority",
                    "schedule_at",
                    "validity_until",
                ]
            },
        ),
        ("Client", {"fields": ["reference", "callback_url", "idempotency_key"]}),
        ("Times", {"fields": ["created_at", "updated_at", "submitted_at", "final_at"]}),
    ]
    readonly_fields = ["state_label", "status", "connector_name"]

    def get_queryset(self, request):
        # Only what the list shows of each part; the page's parts come in one query.
        parts = MessagePart.objects.only("id", "message_id", "index", "smsc_id").order_by("index")
        return super().get_queryset(request).prefetch_related(Prefetch("parts", queryset=parts))

    def get_search_results(self, request, queryset, search_term):
        """Exact matches first, each on its own index: destination, reference, SMSC
        id (in any of its forms) or our id. Only when none matches, the text, which
        reads the whole table."""
        term = search_term.replace("\x00", "").strip()  # PostgreSQL text holds no NUL
        if not term:
            return queryset, False
        # Resolved to ids first: an OR with a subquery would keep PostgreSQL off the indexes.
        by_smsc_id = list(
            MessagePart.objects.filter(match_key__in=match_keys(term))
            .order_by()
            .values_list("message_id", flat=True)[:SEARCH_ID_LIMIT]
        )
        exact = Q(dst=term) | Q(reference=term) | Q(pk__in=by_smsc_id)
        if term.isascii() and term.isdigit() and len(term) < 19:
            exact |= Q(pk=int(term))
        if queryset.filter(exact).exists():
            return queryset.filter(exact), False
        return queryset.filter(text__icontains=term), False

    @admin.display(description="state", ordering="state")
    def state_label(self, message: Message) -> str:
        return state_badge(message.state)

    @admin.display(description="command status", ordering="command_status")
    def status(self, message: Message) -> str:
        return status_label(message.command_status)

    @admin.display(description="SMSC ids")
    def smsc_ids(self, message: Message) -> str:
        ids = [part.smsc_id for part in message.parts.all() if part.smsc_id]
        if not ids:
            return "-"
        shown = format_html_join(", ", "<code>{}</code>", ((i,) for i in ids[:SMSC_IDS_SHOWN]))
        if len(ids) <= SMSC_IDS_SHOWN:
            return shown
        # A long message's ids would make the column (and the page) too wide: the rest
        # are in the tooltip and on the message's page.
        return format_html(
            '{} <span title="{}">… (+{})</span>', shown, "\n".join(ids), len(ids) - SMSC_IDS_SHOWN
        )

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("messaging.change_message")

    @admin.action(description="Resend failed messages", permissions=["resend"])
    def resend_failed_messages(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(queryset.filter(state=State.FAILED).values_list("pk", flat=True))
        moved = resend_failed(ids, by=request.user.get_username())
        self.message_user(request, f"{moved} failed message(s) queued again.", messages.SUCCESS)

    @admin.action(description="Cancel queued messages", permissions=["resend"])
    def cancel_queued_messages(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(queryset.filter(state=State.QUEUED).values_list("pk", flat=True))
        moved = cancel_queued(ids, by=request.user.get_username())
        self.message_user(request, f"{moved} queued message(s) cancelled.", messages.SUCCESS)


# --- incoming, receipts, links, events -----------------------------------------------------


class FragmentInline(ReadOnlyInline):
    model = IncomingFragment
    fields = readonly_fields = ["seq", "total", "reference", "data_coding", "octets", "received_at"]
    ordering = ["seq"]

    @admin.display(description="payload (hex)")
    def octets(self, fragment: IncomingFragment) -> str:
        return bytes(fragment.payload).hex(" ")


@admin.register(IncomingMessage)
class IncomingMessageAdmin(ConnectorColumn, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "src",
        "dst",
        "short_text",
        "parts_received",
        "parts_expected",
        "complete",
        "connector_name",
        "received_at",
    ]
    list_filter = ["complete", "received_at"]
    search_fields = ["=src", "=dst", "text"]
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-id"]
    inlines = [FragmentInline]

    @admin.display(description="text")
    def short_text(self, incoming: IncomingMessage) -> str:
        text = incoming.text or incoming.binary_hex
        return text if len(text) <= 60 else text[:59] + "…"


@admin.register(Receipt)
class ReceiptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "smsc_id",
        "stat",
        "message_link",
        "part_index",
        "error_code",
        "source_addr",
        "received_at",
        "matched",
    ]
    list_filter = [MatchedFilter, ReceiptStatFilter, "received_at"]
    search_fields = ["=source_addr"]  # and the SMSC id, by its match key (below)
    list_select_related = ["part"]
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-id"]

    def get_search_results(self, request, queryset, search_term):
        """An SMSC id in any of the forms it is matched by (receipt_match_key_idx),
        else the handset's number."""
        keys = match_keys(search_term.replace("\x00", "").strip())
        if keys and queryset.filter(match_key__in=keys).exists():
            return queryset.filter(match_key__in=keys), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="message", ordering="message_id")
    def message_link(self, receipt: Receipt) -> str:
        if receipt.message_id is None:
            return "-"
        url = reverse("admin:messaging_message_change", args=[receipt.message_id])
        return format_html('<a href="{}">{}</a>', url, receipt.message_id)

    @admin.display(description="part")
    def part_index(self, receipt: Receipt) -> int | None:
        return receipt.part.index if receipt.part else None

    @admin.display(description="matched", boolean=True)
    def matched(self, receipt: Receipt) -> bool:
        return receipt.matched_at is not None


@admin.register(LinkStatus)
class LinkStatusAdmin(ConnectorColumn, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "worker_id",
        "connector_name",
        "bind_index",
        "state_label",
        "smsc",
        "detail",
        "changed_at",
        "heartbeat_at",
    ]
    list_filter = ["state"]
    ordering = ["-heartbeat_at"]

    @admin.display(description="state", ordering="state")
    def state_label(self, link: LinkStatus) -> str:
        color = LINK_COLORS.get(link.state, "#6c757d")
        return format_html(
            '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
            color,
            link.state,
        )


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "type", "message_id", "created_at"]
    list_filter = ["type"]
    list_per_page = 100
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-id"]
