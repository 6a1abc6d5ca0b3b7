"""API keys in the Django admin: made here (the key is shown once), revoked, never deleted.

Keys are made through ``messaging.api_keys`` like ``manage.py apikey create``;
the admin only ever sees a key's prefix and hash afterwards. Deleting is off:
a key's messages keep pointing at it, and revoking is what stops it working.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from messaging import api_keys
from messaging.models import ApiKey
from messaging.webhooks.targets import MAX_URL_LENGTH, InvalidCallbackURL, clean_callback_url

EDITABLE = ["name", "rate_limit", "default_callback_url", "receive_incoming", "manage_connectors"]
SHOWN = ["prefix", "created_at", "revoked_at", "webhook_secret"]


class ApiKeyForm(forms.ModelForm):
    """The key's fields, with its default callback URL held to the one rule for
    callback URLs (``clean_callback_url``), as ``/v1/send`` holds a message's."""

    default_callback_url = forms.URLField(
        max_length=MAX_URL_LENGTH,
        required=False,
        assume_scheme="https",
        help_text="Receipts of this key's messages are POSTed here (http or https, a public host).",
    )

    class Meta:
        model = ApiKey
        fields = EDITABLE

    def clean_default_callback_url(self) -> str:
        try:
            return clean_callback_url(self.cleaned_data.get("default_callback_url") or "")
        except InvalidCallbackURL as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "prefix",
        "name",
        "created_at",
        "revoked_at",
        "rate_limit",
        "receive_incoming",
        "manage_connectors",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "receive_incoming"]
    search_fields = ["prefix", "name"]
    ordering = ["-created_at"]
    actions = ["revoke"]

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
