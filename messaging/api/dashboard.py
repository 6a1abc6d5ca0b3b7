"""GET /: the dashboard page (send form, live events, message log, link state).

A plain template with its own static JS and CSS: no external resources and
no build step. What the page needs to know about this set-up travels in one
JSON blob (``json_script``).
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.views.decorators.http import require_GET

from messaging.api import demo_simulator


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
        # How long texts are cut decides the size of each part (see sms.splitting).
        "concat": settings.SMPP_CONCAT,
        "max_parts": settings.SMS_MAX_PARTS,
        "admin_url": admin_url,
        "docs_url": reverse("docs"),
        # serve --simulator: the page offers "simulate an incoming message".
        "simulator": demo_simulator.embedded() is not None,
    }


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """GET /"""
    return render(request, "index.html", {"config": page_config()})


@cache
def _favicon() -> bytes | None:
    path = finders.find("favicon.ico")
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """GET /favicon.ico: browsers ask for it at the root whatever the page says."""
    icon = _favicon()
    if icon is None:
        raise Http404("no favicon")
    response = HttpResponse(icon, content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
