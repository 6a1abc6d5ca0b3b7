"""Building blocks the admin's pages share: read-only pages, cheap pagination, badges."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from messaging.states import State
from smpp.command_status import status_name

STATE_COLORS = {
    State.QUEUED: "#6c757d",
    State.SUBMITTING: "#0d6efd",
    State.SUBMITTED: "#0dcaf0",
    State.DELIVERED: "#198754",
    State.UNDELIVERABLE: "#fd7e14",
    State.EXPIRED: "#adb5bd",
    State.REJECTED: "#dc3545",
    State.FAILED: "#dc3545",
}


class EstimatedCountPaginator(Paginator):
    """A paginator that does not count a big unfiltered table on PostgreSQL.

    ``SELECT count(*)`` reads the whole table; the planner's row estimate
    (``pg_class.reltuples``, kept fresh by autovacuum) is close enough to
    number the pages of a log. Filtered lists, small tables and other
    databases are counted exactly.
    """

    exact_below = 100_000  # rows: under this, counting is cheap and exact

    @cached_property
    def count(self) -> int:
        estimate = self._estimate()
        if estimate is not None and estimate >= self.exact_below:
            return estimate
        return super().count

    def _estimate(self) -> int | None:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or queryset.query.where or queryset.query.distinct:
            return None
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [queryset.model._meta.db_table],
            )
            row = cursor.fetchone()
        # -1 (never analysed) or no such table: count for real.
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def state_badge(state: str) -> str:
    color = STATE_COLORS.get(state, "#6c757d")
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        color,
        state,
    )


def status_label(code: int | None) -> str:
    """``0x0B ESME_RINVDSTADR`` for an SMPP command_status; ``-`` for none."""
    if code is None:
        return "-"
    return f"0x{code:02X} {status_name(code)}"


class ReadOnlyAdminMixin:
    """Show, never add, change or delete: the store is a record of what happened."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
