"""What the project asks of daphne, with its own values: the reaches are in
``upstream.daphne`` (why each, its figure, and what happens on another daphne).

- ``skip_twisted_form_parsing``: daphne's requests skip Twisted's unused parse
  of form bodies (17 % of a /v1/send's CPU in daphne).
- ``redact_access_log``: ``api_key`` values out of daphne's access-log lines.
- ``bound_request_bodies``: daphne keeps at most ``HTTP_MAX_BODY_SIZE`` of a body.

Each returns False where it cannot apply (another ASGI server, another daphne).
"""

from __future__ import annotations

from django.conf import settings

from messaging.url_secrets import redact_url
from upstream import daphne


def skip_twisted_form_parsing() -> bool:
    """Daphne's requests without Twisted's form parsing (daphne never reads it)."""
    return daphne.skip_form_parsing()


def redact_access_log() -> bool:
    """Take ``api_key`` values out of daphne's access-log lines
    (tests/test_log_redaction.py)."""
    return daphne.redact_access_log(redact_url)


def bound_request_bodies() -> bool:
    """Keep no more than ``HTTP_MAX_BODY_SIZE`` of any request body in daphne
    (the application answers 413 from the declared length, ``smsapi.handlers``)."""
    return daphne.bound_request_bodies(lambda: settings.HTTP_MAX_BODY_SIZE)
