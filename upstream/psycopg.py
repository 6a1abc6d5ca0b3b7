"""psycopg's C timestamptz loader on the store's own cursors, in place of Django's.

Django registers, on every connection it makes, a timestamptz loader that
subclasses psycopg's pure-Python one (to give datetimes in the connection's
time zone); psycopg's default, with psycopg[binary], is the C one. The store's
hot path (``messaging.store.backends.postgresql``) reads timestamps by the
thousand a second, and Django's loader was a tenth of the worker's CPU; in a
UTC session both give the same aware UTC datetimes. So its cursors register
psycopg's default loader back, taken from psycopg's global adapters map.

That relies on what psycopg 3.3 does, not on its documented promises: that
the global map's text loader for timestamptz is the C one and reads "+00"
text as an aware UTC datetime, as Django's does. ``tests/test_upstream_store.py``
fails when either stops being true. On another psycopg ``c_timestamptz_loader``
warns and returns None: the cursor keeps Django's loader.
"""

from __future__ import annotations

import functools

from upstream import written_for

PSYCOPG_VERSIONS = ("3.3",)
C_TIMESTAMPTZ = "psycopg's C timestamptz loader on the store's cursors (upstream.psycopg)"


def c_timestamptz_loader() -> type | None:
    """psycopg's own loader of timestamptz text, None on a psycopg this was not written for."""
    if not written_for("psycopg", *PSYCOPG_VERSIONS, what=C_TIMESTAMPTZ):
        return None
    return _default_timestamptz_loader()


@functools.cache
def _default_timestamptz_loader() -> type:
    import psycopg
    from psycopg.postgres import types

    return psycopg.adapters.get_loader(types["timestamptz"].oid, psycopg.pq.Format.TEXT)
