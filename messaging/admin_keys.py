"""API keys in the Django admin: made here (the key is shown once), revoked, never deleted.

Keys are made through ``messaging.api_keys`` like ``manage.py apikey create``;
the admin only ever sees a key's prefix and hash afterwards. Deleting is off:
a key's messages keep pointing at it, and revoking is what stops it working.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import api_keys
from .models import ApiKey

EDITABLE = ["name", "rate_limit", "default_callback_url", "receive_incoming"]
SHOWN = ["prefix", "created_at", "revoked_at", "webhook_secret"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "created_at", "revoked_at", "rate_limit", "receive_incoming"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "receive_incoming"]
    search_fields = ["prefix", "name"]
    ordering = ["-created_at"]
    actions = ["revoke"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return EDITABLE if obj is None else [*SHOWN[:1], *EDITABLE, *SHOWN[1:]]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else SHOWN

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key = api_keys.issue_key(obj)  # saves it
        messages.success(
            request,
            f"The new API key, shown only this once (keep it now): {key}",
        )

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} API key(s) revoked.", messages.SUCCESS)
