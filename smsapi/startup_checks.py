"""What is an unsafe configuration, said loudly at start.

The demo (``make run``) is open on purpose: no API key, a random
``SECRET_KEY`` per process. That is safe only while nobody else can reach it,
i.e. while the server listens on loopback addresses only (the default,
``HTTP_HOST=127.0.0.1``). Listening anywhere else makes it a service, and then

- ``SMSAPI_AUTH=off`` is an open SMS relay: anyone who reaches the port sends
  SMS on our account and reads every receipt;
- no ``SECRET_KEY`` means a random key per process: admin sessions break on
  every restart and differ between processes;
- ``DEBUG=true`` shows settings and tracebacks to whoever asks.

``unsafe_configuration`` is the rule (a plain function, unit-tested);
``warn_if_unsafe`` logs its findings at WARNING when a server starts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable

from django.conf import settings

logger = logging.getLogger("smsapi.startup")

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True when ``host`` can only be reached from this machine.

    An empty host, ``0.0.0.0`` and ``::`` mean every interface: not loopback.
    Other host names are not resolved; they count as reachable from outside.
    """
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_configuration(
    listen_hosts: Iterable[str], *, auth: str, secret_key_set: bool, debug: bool
) -> list[str]:
    """The warnings a server listening on ``listen_hosts`` deserves (empty: none)."""
    exposed = sorted({h for h in listen_hosts if not is_loopback(h)})
    if not exposed:
        return []  # the demo: reachable from this machine only
    where = ", ".join(h or "every interface" for h in exposed)
    warnings = []
    if auth != "required":
        warnings.append(
            f"listening on {where} with SMSAPI_AUTH=off: anyone who reaches this port can send "
            "SMS and read every message and receipt. Set SMSAPI_AUTH=required (and create keys "
            "with `manage.py apikey create`), or listen on 127.0.0.1 only (HTTP_HOST)."
        )
    if not secret_key_set:
        warnings.append(
            f"listening on {where} without SECRET_KEY: a random key per process, so admin "
            "logins do not survive a restart or span processes. Set SECRET_KEY (50 random "
            "characters, the same in every server process)."
        )
    if debug:
        warnings.append(
            f"listening on {where} with DEBUG=true: error pages show settings and tracebacks "
            "to anyone. Never run DEBUG outside this machine."
        )
    return warnings


def warn_if_unsafe(listen_hosts: Iterable[str]) -> list[str]:
    """Log each finding of ``unsafe_configuration`` for this process's settings."""
    found = unsafe_configuration(
        listen_hosts,
        auth=settings.SMSAPI_AUTH,
        secret_key_set=bool(os.environ.get("SECRET_KEY")),
        debug=settings.DEBUG,
    )
    for warning in found:
        logger.warning("UNSAFE CONFIGURATION: %s", warning)
    return found
