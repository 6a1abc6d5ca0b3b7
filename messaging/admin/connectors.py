"""SMSC connectors and routes in the admin: edited live, checked as the API checks them.

A connector's password is write-only here too: the field is always shown empty,
and left empty it keeps the stored one. A connector a route names cannot be
deleted (``messaging.connectors.removal_problem``). The route list has a
"which connector would this take" check (``explain_route``).
"""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from messaging.connectors import check_route, explain_route, removal_problem, routing_cache
from messaging.models import ApiKey, Connector, LinkStatus, Route
from messaging.routing import public_name


class ConnectorForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        max_length=8,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Never shown back; leave empty to keep the one stored.",
    )

    class Meta:
        model = Connector
        exclude: list[str] = []

    def clean_password(self) -> str:
        password = self.cleaned_data.get("password") or ""
        if not password and self.instance.pk:
            return self.instance.password
        return password


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    form = ConnectorForm
    list_display = ["name", "enabled", "address", "system_id", "binds", "bind_mode", "links"]
    list_filter = ["enabled"]
    search_fields = ["name", "host", "system_id"]
    actions = ["enable", "disable"]
    fieldsets = [
        (None, {"fields": ["name", "enabled"]}),
        ("SMSC", {"fields": ["host", "port", "tls", "tls_insecure", "tls_ca"]}),
        (
            "Bind",
            {
                "fields": [
                    "system_id",
                    "password",
                    "password_variable",
                    "system_type",
                    "bind_mode",
                    "binds",
                ]
            },
        ),
        (
            "Pace and timeouts",
            {
                "fields": [
                    "window",
                    "max_rate",
                    "enquire_link_interval",
                    "response_timeout",
                    "link_timeout",
                    "failover_after",
                ]
            },
        ),
        ("Addressing", {"fields": ["source_ton", "source_npi", "dest_ton", "dest_npi"]}),
        ("Text and receipts", {"fields": ["default_alphabet", "smsc_id_style"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Connector | None = None) -> list:
        return ["name"] if obj is not None else []  # messages carry the name

    @admin.display(description="SMSC")
    def address(self, connector: Connector) -> str:
        return f"{connector.host}:{connector.port}{' (TLS)' if connector.tls else ''}"

    @admin.display(description="links now")
    def links(self, connector: Connector) -> str:
        states = LinkStatus.objects.filter(connector=connector.name).exclude(state="stopped")
        return ", ".join(sorted(s.state for s in states)) or "-"

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        routing_cache.forget()

    def delete_model(self, request: HttpRequest, obj: Connector) -> None:
        problem = removal_problem(obj)
        if problem:
            self.message_user(request, problem, messages.ERROR)
            return
        obj.delete()
        routing_cache.forget()

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for connector in queryset:
            self.delete_model(request, connector)

    @admin.action(description="Enable the selected connectors")
    def enable(self, request: HttpRequest, queryset) -> None:
        for connector in queryset:
            connector.enabled = True
            connector.save(update_fields=["enabled", "updated_at"])

    @admin.action(description="Disable the selected connectors (their messages fail over)")
    def disable(self, request: HttpRequest, queryset) -> None:
        for connector in queryset:
            connector.enabled = False
            connector.save(update_fields=["enabled", "updated_at"])


class RouteForm(forms.ModelForm):
    class Meta:
        model = Route
        exclude: list[str] = []
        help_texts = {
            "connectors": "Names in order of preference, comma-separated ('default': the "
            "SMPP_* settings' connector); the first usable one takes the message.",
            "weights": "One whole number per connector for a weighted split; "
            "empty: failover order.",
            "dst_prefixes": "Comma-separated digits ('44,33'); empty: any destination.",
            "dst_pattern": "A regular expression the whole destination matches.",
            "sources": "Comma-separated source addresses; empty: any.",
        }

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        candidate = copy.copy(self.instance)
        for name, value in data.items():
            if name != "api_keys":
                setattr(candidate, name, value)
        keys = data.get("api_keys")
        try:
            check_route(candidate, [k.pk for k in keys] if keys is not None else [])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None
        return data


class RouteCheckForm(forms.Form):
    dst = forms.CharField(max_length=21, label="destination")
    src = forms.CharField(max_length=21, required=False, label="source")
    api_key = forms.ModelChoiceField(ApiKey.objects.all(), required=False, label="API key")


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteForm
    list_display = ["position", "name", "enabled", "conditions", "connectors", "weights"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    filter_horizontal = ["api_keys"]
    change_list_template = "admin/messaging/route/change_list.html"

    @admin.display(description="when")
    def conditions(self, route: Route) -> str:
        parts = []
        if route.dst_prefixes:
            parts.append(f"to {route.dst_prefixes}")
        if route.dst_pattern:
            parts.append(f"to /{route.dst_pattern}/")
        if route.sources:
            parts.append(f"from {route.sources}")
        if route.pk and route.api_keys.exists():
            parts.append("key " + ", ".join(k.prefix for k in route.api_keys.all()))
        return "; ".join(parts) or "always (default route)"

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        routing_cache.forget()

    def get_urls(self) -> list:
        check = self.admin_site.admin_view(self.check_view)
        return [path("check/", check, name="messaging_route_check"), *super().get_urls()]

    def check_view(self, request: HttpRequest) -> HttpResponse:
        """Which route and connector a message would take now."""
        form = RouteCheckForm(request.GET or None)
        answer = None
        if form.is_valid():
            key = form.cleaned_data["api_key"]
            answer = explain_route(
                form.cleaned_data["dst"], form.cleaned_data["src"], key.pk if key else None
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Which connector would this take?",
            "form": form,
            "answer": answer,
            "opts": self.model._meta,
            "default_name": public_name(""),
        }
        return TemplateResponse(request, "admin/messaging/route/check.html", context)
