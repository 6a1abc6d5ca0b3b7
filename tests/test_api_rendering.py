"""How the API picks and renders its answers (messaging/api/content_negotiation.py,
messaging/api/async_views.py)."""

from __future__ import annotations

import json

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from messaging.api.content_negotiation import UsualAcceptNegotiation
from messaging.models import Message

ACCEPT_HEADERS = [
    None,  # no header
    "*/*",
    "application/json",
    "application/json; indent=4",
    "application/*",
    "text/html",
    "text/html, */*;q=0.8",
    "text/html;q=0.9, application/json",
    "",
]
QUERIES = ["", "?format=json", "?format=api"]
RENDERER_LISTS = [
    [JSONRenderer()],  # the API's
    [JSONRenderer(), BrowsableAPIRenderer()],
    [BrowsableAPIRenderer(), JSONRenderer()],
]


def _negotiate(negotiation, accept: str | None, query: str, renderers: list):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get("/v1/query" + query, **headers))
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except NotAcceptable:
        return "406"
    except Http404:  # ?format= names no renderer
        return "404"
    return type(renderer).__name__, media_type


@pytest.mark.parametrize("renderers", RENDERER_LISTS, ids=["json", "json+api", "api+json"])
@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_the_answer_is_drfs_for_every_accept_header(accept, query, renderers):
    assert _negotiate(UsualAcceptNegotiation(), accept, query, renderers) == _negotiate(
        DefaultContentNegotiation(), accept, query, renderers
    )


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_the_usual_headers_are_not_parsed(accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get("/v1/query", **headers))
    UsualAcceptNegotiation().select_renderer(request, [JSONRenderer()])
    assert not hasattr(request, "_parsed_accept_list")  # DRF's parse would have cached it


DRY_RUN = {"dst": "5550001", "text": "hi", "dry_run": "1"}


@pytest.mark.django_db(transaction=True)
def test_an_unacceptable_accept_header_is_refused_and_nothing_is_stored():
    response = APIClient().post(
        "/v1/send", {"dst": "5550001", "text": "hi"}, HTTP_ACCEPT="text/html"
    )
    assert response.status_code == 406
    assert Message.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_media_type_parameters_still_reach_the_renderer():
    response = APIClient().post("/v1/send", DRY_RUN, HTTP_ACCEPT="application/json; indent=4")
    assert response.status_code == 200
    assert response.content.decode() == json.dumps(response.json(), indent=4)


@pytest.mark.django_db(transaction=True)
def test_an_answer_is_rendered_once(monkeypatch):
    renders = []
    render = JSONRenderer.render

    def counting_render(self, *args, **kwargs):
        renders.append(args[0])
        return render(self, *args, **kwargs)

    monkeypatch.setattr(JSONRenderer, "render", counting_render)
    response = APIClient().post("/v1/send", DRY_RUN)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert len(renders) == 1
