"""Where the project reaches into other libraries' private APIs: one module per reach.

Each module here names the library version it was written for and calls
``written_for`` when it applies itself: on another version it logs a warning
and the caller falls back to the library's public behaviour (or, where there is
none, says what it did anyway). Each has a test that fails when upstream
changes under it (``tests/test_upstream_*.py``).
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import metadata

logger = logging.getLogger(__name__)


@cache
def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, ``""`` if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def written_for(distribution: str, *prefixes: str, what: str) -> bool:
    """True when the installed ``distribution`` is one of the versions ``prefixes``
    name ("5.2" admits 5.2.x); otherwise warns once that ``what`` is left out."""
    version = installed_version(distribution)
    if any(version == p or version.startswith(p + ".") for p in prefixes):
        return True
    _warn_once(distribution, version, prefixes, what)
    return False


@cache
def _warn_once(distribution: str, version: str, prefixes: tuple[str, ...], what: str) -> None:
    logger.warning(
        "%s %s is not a version %s was written for (%s): left out",
        distribution,
        version or "(not installed)",
        what,
        ", ".join(prefixes),
    )
