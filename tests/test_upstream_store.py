"""upstream.psycopg and the store's SQL backends: what they rely on is still there.

Fails when psycopg (or Django) changes what the store's raw SQL relies on:
psycopg's C timestamptz loader reading as Django's loader does in a UTC
session, Django's error translation for a driver's cursor, and the "%s"
statements the SQLite backend rewrites as Django's own cursor would.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from importlib import metadata

import pytest
from django.db import IntegrityError, connection, transaction

from messaging.store.backends import Sql
from upstream import psycopg as upstream_psycopg

# timestamptz text as PostgreSQL sends it, and the moment it stands for.
READS = {
    "2026-01-02 03:04:05+00": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "2026-01-02 03:04:05.000006+00": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "1999-12-31 23:59:59.999999+02": datetime(1999, 12, 31, 21, 59, 59, 999999, tzinfo=UTC),
    "2026-06-30 12:00:00-03:30": datetime(2026, 6, 30, 15, 30, tzinfo=UTC),
}
TIMESTAMPS = list(READS)


def test_the_installed_psycopg_is_one_it_was_written_for():
    version = metadata.version("psycopg")
    assert version.startswith(tuple(f"{v}." for v in upstream_psycopg.PSYCOPG_VERSIONS)), version


def test_psycopgs_default_timestamptz_loader_is_its_c_one_and_reads_utc():
    loader = upstream_psycopg.c_timestamptz_loader()
    assert loader is not None
    # psycopg[binary]'s loaders live in psycopg_binary (C); the pure-Python one is what
    # Django subclasses, four times slower.
    assert loader.__module__.startswith("psycopg_binary"), loader.__module__
    read = loader(0, None)  # no connection: UTC, as in the store's UTC sessions
    for text in TIMESTAMPS:
        value = read.load(text.encode())
        assert value.utcoffset() == timedelta(0)
        assert value == READS[text]


def test_on_another_psycopg_the_store_keeps_djangos_loader_and_says_so(another_version, caplog):
    with caplog.at_level(logging.WARNING, logger="upstream"):
        assert upstream_psycopg.c_timestamptz_loader() is None
    assert upstream_psycopg.C_TIMESTAMPTZ in caplog.text


@pytest.mark.store
@pytest.mark.django_db
def test_the_stores_cursor_reads_timestamps_as_a_django_cursor_does():
    statement = "SELECT " + ", ".join(
        f"CAST(%s AS {'timestamptz' if connection.vendor == 'postgresql' else 'text'})"
        for _ in TIMESTAMPS
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, TIMESTAMPS)
        django_row = cursor.fetchone()
    with transaction.atomic(), Sql() as sql:
        (store_row,) = sql.execute(statement, TIMESTAMPS)
    assert list(store_row) == list(django_row)
    if connection.vendor == "postgresql":
        assert all(v.utcoffset() == timedelta(0) for v in store_row)
        assert store_row[0] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert store_row[3] == datetime(2026, 6, 30, 15, 30, tzinfo=UTC)


@pytest.mark.store
@pytest.mark.django_db
def test_statements_with_percent_signs_read_as_djangos_cursor_reads_them():
    """The SQLite backend rewrites "%s" and "%%" itself (not Django's private regex)."""
    statement = "SELECT %s, '100%%', '%%s', %s || '%%'"
    with connection.cursor() as cursor:
        cursor.execute(statement, [1, "a"])
        django_row = cursor.fetchone()
    with transaction.atomic(), Sql() as sql:
        (store_row,) = sql.execute(statement, [1, "a"])
    assert tuple(store_row) == tuple(django_row) == (1, "100%", "%s", "a%")


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_the_drivers_errors_come_out_as_djangos():
    """``Sql`` runs on the driver's own cursor: Django's error translation
    (``connection.wrap_database_errors``) must still apply to it."""
    assert hasattr(connection, "wrap_database_errors")
    with pytest.raises(IntegrityError), transaction.atomic(), Sql() as sql:
        sql.execute(
            "INSERT INTO messaging_statetransition (message_id, to_state, at) VALUES (%s, %s, %s)",
            [None, None, sql.dt(datetime.now(UTC))],
        )


@pytest.mark.store
@pytest.mark.django_db
def test_the_backend_is_chosen_from_the_connections_vendor():
    with transaction.atomic(), Sql() as sql:
        assert sql.vendor == connection.vendor
        assert sql.postgres == (connection.vendor == "postgresql")
        assert not sql.in_pipeline
        with sql.pipeline():
            assert sql.in_pipeline == sql.postgres
        assert not sql.in_pipeline
