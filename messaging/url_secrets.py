"""Secrets that travel in URLs, taken out before a URL is logged or stored.

Browsers' ``EventSource`` and ``WebSocket`` cannot set headers, so clients pass
their key as ``?api_key=``. Such a URL must never reach a log line, and a
callback URL that carries one (pointing back at this API, say) must not keep
a working key in the database. Pure: no Django, so the log formatters can use it.
"""

from __future__ import annotations

import re

SECRET_PARAMETERS = ("api_key",)
REDACTED = "REDACTED"

# ``api_key=<value>`` in a query string, whatever sits around it; the value ends at
# the next separator. Case-insensitive: ``API_KEY=`` is read the same by some clients.
_SECRET_NAMES = "|".join(re.escape(p) for p in SECRET_PARAMETERS)
_SECRET_IN_QUERY = re.compile(r"(?i)([?&;](?:" + _SECRET_NAMES + r")=)[^&;#\s\"']*")


def redact_url(url: str) -> str:
    """``url`` with the value of every secret query parameter replaced by ``REDACTED``."""
    if "=" not in url:
        return url
    return _SECRET_IN_QUERY.sub(lambda m: m.group(1) + REDACTED, url)


# ``scheme://user:password@`` at the start of a URL: the password part.
_PASSWORD_IN_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#@]*@")


def loggable_url(url: str) -> str:
    """``url`` as a log line or an admin page may show it: secret query parameters
    and the password of a ``user:password@`` part replaced by ``REDACTED``.

    A callback URL keeps its user and password where it is stored (the receiver
    asked for them), but they are the receiver's secret, not something to log.
    """
    if "@" in url:
        url = _PASSWORD_IN_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", url)
    return redact_url(url)
