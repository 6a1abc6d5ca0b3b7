"""The service's URLs plus one view that does next to nothing (``bench/ceiling.py``).

- ``/v1/ceiling``: a plain ``async def`` Django view that reads the form and
  answers a small JSON body, served by the API's handler and middleware (the
  path is under ``/v1/``): Django's request and response without DRF.

Every URL of the service is kept, so ``/v1/send`` (and its ``dry_run``: DRF,
authentication, validation and the split, with no store) answers beside them.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path

from bench.bare_asgi import ANSWER
from smsapi.urls import urlpatterns as service_urlpatterns


async def django_only(request) -> HttpResponse:
    request.POST  # noqa: B018 - parse the form as a view would
    return HttpResponse(ANSWER, status=202, content_type="application/json")


urlpatterns = [path("v1/ceiling", django_only), *service_urlpatterns]
