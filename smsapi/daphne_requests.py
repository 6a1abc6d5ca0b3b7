"""Daphne's HTTP requests without the work Twisted does for nobody.

Twisted's ``Request`` parses every POST body sent as a form
(``application/x-www-form-urlencoded`` or ``multipart/form-data``) into
``request.args``, and reads the Content-Type header through the ``email``
package to decide. Daphne never looks at ``args``: it hands the raw body to
Django, which parses it itself. Measured on one daphne process under
``/v1/send`` (a form post): 12-18 % of its CPU went to that unused parse.

Twisted lets a request skip it (``Request(..., parsePOSTFormSubmission=False)``),
but daphne builds its requests without that argument, so its request class
gets it as a default here, once, at start-up.

Twisted's HTTP factory also formats a combined-log line for every request and
hands it to Twisted's logging, which daphne discards (it writes its own access
log, ``--access-log``; only with ``-v 2`` or more does it pass Twisted's log on,
where the line repeats daphne's): 2.4 % of the CPU of a ``/v1/send`` that
stores nothing. Daphne's factory skips that line here.
"""

from __future__ import annotations

import functools
import inspect


def skip_twisted_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; False where that
    cannot apply (daphne not installed, or a Twisted without the option)."""
    try:
        from daphne.http_protocol import WebRequest
        from twisted.web.http import Request
    except ImportError:  # served by another ASGI server
        return False
    if "parsePOSTFormSubmission" not in inspect.signature(Request.__init__).parameters:
        return False
    if getattr(WebRequest, "skips_form_parsing", False):
        return True
    build = WebRequest.__init__

    @functools.wraps(build)
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        build(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest.skips_form_parsing = True
    return True


def skip_twisted_access_log() -> bool:
    """Stop daphne's HTTP factory writing Twisted's access-log line; False
    where daphne is not installed."""
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:  # served by another ASGI server
        return False
    HTTPFactory.log = _no_access_line
    return True


def _no_access_line(self, request) -> None:
    """Daphne's own access log (``--access-log``) records the request."""
