"""GET /: the dashboard page (send form, live events, message log, link state).

A plain template with its own static JS and CSS: no external resources and
no build step. What the page needs to know about this set-up travels in one
JSON blob (``json_script``).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.views.decorators.http import require_GET


def api_base() -> str:
    """Where /v1 lives for the browser: behind the script name and SMSAPI_PREFIX."""
    prefix = f"{settings.SMSAPI_PREFIX}/" if settings.SMSAPI_PREFIX else ""
    return f"{get_script_prefix()}{prefix}v1"


def page_config() -> dict:
    try:
        admin_url = reverse("admin:index")
    except NoReverseMatch:
        admin_url = ""
    return {
        "api_base": api_base(),
        # How long texts are cut decides the size of each part (see messaging.splitting).
        "concat": settings.SMPP_CONCAT,
        "max_parts": settings.SMS_MAX_PARTS,
        "admin_url": admin_url,
    }


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """GET /"""
    return render(request, "index.html", {"config": page_config()})
