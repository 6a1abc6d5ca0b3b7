"""Raw SQL for the store's hot path, the same on SQLite and PostgreSQL.

The worker writes a few rows per message at thousands of messages a second.
Django's ``bulk_update`` builds a ``CASE WHEN`` per field and row (quadratic
in the batch) and ``bulk_create`` makes a model instance per row; both cost
more than the database itself. Here rows are plain tuples: on PostgreSQL one
statement per table whatever the number of rows (``COPY``, or in a pipeline
``unnest`` of one array per column, dumped in C), on SQLite one prepared
statement run for many rows (``executemany``). Everything runs on Django's
connection, inside the caller's ``transaction.atomic()``.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection

# PostgreSQL binds at most 65535 parameters per statement, SQLite 32766.
MAX_IN_LIST = 10_000


@functools.cache
def _c_timestamptz_loader() -> type:
    """psycopg's own loader for timestamptz text (its C one with psycopg[binary])."""
    import psycopg
    from psycopg.postgres import types

    return psycopg.adapters.get_loader(types["timestamptz"].oid, psycopg.pq.Format.TEXT)


class Sql:
    """Statements on the default connection; use inside ``transaction.atomic()``."""

    def __init__(self) -> None:
        connection.ensure_connection()
        self.postgres = connection.vendor == "postgresql"
        self.mark = "%s"  # the cursor's own placeholder
        if self.postgres:
            import psycopg

            # Server-side binding: prepared once, then only values travel (Django's own
            # cursors interpolate every value into the SQL text on the client).
            self.cursor = psycopg.Cursor(connection.connection)
            if connection.timezone_name == "UTC":
                # Timestamps parsed in C. Django's loader subclasses psycopg's pure
                # Python one (4x slower: a tenth of the worker's CPU went to it); in a
                # UTC session both give the same aware UTC datetimes.
                self.cursor.adapters.register_loader("timestamptz", _c_timestamptz_loader())
        else:
            # sqlite3's own cursor, given "?" placeholders (see ``_qmarks``): Django's
            # rewrites each statement's "%s" with a regular expression on every call,
            # 3.4 ms for a batch's 14,000-value INSERT, 6 % of the embedded batch ingest.
            self.cursor = connection.connection.cursor()
            self.mark = "?"
            # SQLite keeps datetimes as naive text in the connection's time zone.
            utc = connection.timezone_name == "UTC"
            self.datetime_text = _naive_utc_text if utc else _naive_text

    def table(self, model: type) -> ModelRows:
        """The ``ModelRows`` of ``model`` (built once per model and database)."""
        key = (model, self.postgres)
        table = _TABLES.get(key)
        if table is None:
            table = _TABLES[key] = ModelRows(model, self)
        return table

    def close(self) -> None:
        self.cursor.close()

    def __enter__(self) -> Sql:
        # The PostgreSQL cursor is psycopg's own: have its errors raised as Django's
        # (IntegrityError, OperationalError...), as a Django cursor's would be.
        self._errors = connection.wrap_database_errors
        self._errors.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
        self._errors.__exit__(*exc_info)

    def use_indexes(self, ordered: bool = False) -> None:
        """Plan this transaction's statements on the indexes, whatever the statistics say.

        Every statement of the hot path looks rows up by key: an index is always
        right. But a table filled in the last minute has no statistics yet, and
        the planner then takes it for small (a sequential scan per lookup) or the
        queue for empty (sorting every due part rather than walking the claim
        index in order). ``ordered`` also rules out sorting.
        """
        if self.postgres:
            ordering = "off" if ordered else "on"
            # One round trip (no parameters: several statements may go at once).
            self.cursor.execute(
                "SET LOCAL enable_seqscan = off; "
                f"SET LOCAL enable_bitmapscan = {ordering}; SET LOCAL enable_sort = {ordering}"
            )

    def serialize(self, key: int) -> None:
        """Let one transaction at a time (of any process) past this point, until commit.

        SQLite writers are one at a time anyway.
        """
        if self.postgres:
            self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,), prepare=False)

    def pipeline(self) -> contextlib.AbstractContextManager:
        """Statements that return nothing, sent together and answered together.

        On PostgreSQL a batch of results is six statements (an UPDATE or INSERT
        per table): one round trip for all instead of one each, which under load
        was a third of a batch's time. Errors come when the block ends.
        """
        if self.postgres:
            return self.cursor.connection.pipeline()
        return contextlib.nullcontext()

    @property
    def in_pipeline(self) -> bool:
        """Inside ``pipeline()`` on PostgreSQL (libpq's own state, not a copy of it)."""
        if not self.postgres:
            return False
        from psycopg.pq import PipelineStatus

        return self.cursor.connection.pgconn.pipeline_status != PipelineStatus.OFF

    # --- values ------------------------------------------------------------------------

    def dt(self, value: datetime | None) -> Any:
        """A datetime as this database stores it (SQLite: naive text, Django's way)."""
        return value if self.postgres else self.datetime_text(value)

    def in_list(self, column: str, values: Sequence) -> tuple[str, list]:
        """``column IN (...)`` as SQL and parameters."""
        if self.postgres:
            return f"{column} = ANY(%s)", [list(values)]
        # "?" already: ``_qmarks`` leaves them as they are, and has no long list to rewrite.
        return f"{column} IN ({','.join(['?'] * len(values))})", list(values)

    # --- statements --------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """A statement written as for Django's cursors ("%s"); its rows, if any."""
        return self._execute(sql if self.postgres else _qmarks(sql), params)

    def _execute(self, sql: str, params: Sequence) -> list[tuple]:
        """``execute`` of a statement written with ``self.mark``."""
        if self.postgres:
            # Not prepared: a prepared statement soon gets a generic plan, which for
            # ``= ANY(array)`` of unknown size is a sequential scan.
            self.cursor.execute(sql, params, prepare=False)
        else:
            self.cursor.execute(sql, params)
        return self.cursor.fetchall() if self.cursor.description else []

    def update_rows(self, model: type, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """``UPDATE table SET columns... WHERE id = ...``; each row is (values..., id).

        On PostgreSQL one statement for all the rows (``FROM unnest(arrays)``):
        row by row, even pipelined, the server parses, plans and runs a
        statement per row, and that was most of its time under load.
        """
        rows = list(rows)
        if not rows:
            return
        table = self.table(model)
        if self.postgres and len(rows) > 1:
            types = [*(table.db_type(c) for c in columns), "bigint"]
            names = ", ".join(f'"{c}"' for c in (*columns, "id"))
            assignments = ", ".join(f'"{c}" = v."{c}"' for c in columns)
            arrays = ", ".join(f"%b::{t}[]" for t in types)
            self.cursor.execute(
                f"UPDATE {table.table} AS t SET {assignments} "
                f"FROM unnest({arrays}) AS v({names}) WHERE t.id = v.id",
                [list(column) for column in zip(*rows, strict=True)],
                prepare=False,
            )
            return
        mark = self.mark
        assignments = ", ".join(f'"{c}" = {mark}' for c in columns)
        self.cursor.executemany(f'UPDATE {table.table} SET {assignments} WHERE "id" = {mark}', rows)

    def insert(self, model: type, values: Sequence[dict]) -> None:
        """Insert rows of ``model`` given as {attribute: value} (defaults for the rest);
        ids are not returned (see ``last_id``).

        On PostgreSQL ``COPY``, the fastest bulk load; in a ``pipeline``, which
        ``COPY`` cannot join, one ``INSERT ... SELECT FROM unnest(arrays)``."""
        if not values:
            return
        table = self.table(model)
        rows = table.rows(values)
        if self.in_pipeline:
            self.cursor.execute(*_insert_from_arrays(table, rows), prepare=False)
        elif self.postgres:
            with self.cursor.copy(f"COPY {table.table} ({table.column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join([self.mark] * len(table.columns))
            self.cursor.executemany(
                f"INSERT INTO {table.table} ({table.column_list}) VALUES ({marks})", rows
            )

    def insert_returning_ids(self, table: ModelRows, rows: Sequence[Sequence]) -> list[int]:
        """Insert rows and return their new ids, in the order of ``rows``.

        Ids come from a sequence (PostgreSQL) or AUTOINCREMENT (SQLite), taken
        row after row: in the order of the rows, they rise. So the ids one
        statement returns, sorted, are the rows' ids in order.
        """
        if self.postgres and len(rows) > 1:
            statement, params = _insert_from_arrays(table, rows)
            return sorted(r[0] for r in self.execute(statement + " RETURNING id", params))
        row_marks = "(" + ", ".join([self.mark] * len(table.columns)) + ")"
        ids: list[int] = []
        for batch in chunks(rows, max(1, 30_000 // len(table.columns))):
            params = [value for row in batch for value in row]
            returned = self._execute(
                f"INSERT INTO {table.table} ({table.column_list}) VALUES "
                f"{', '.join([row_marks] * len(batch))} RETURNING id",
                params,
            )
            ids += sorted(r[0] for r in returned)
        return ids

    def last_id(self, table: str) -> int:
        """The id this connection last gave a row of ``table`` (its highest so far)."""
        if self.postgres:
            sql = f"SELECT currval(pg_get_serial_sequence('{table}', 'id'))"
        else:
            sql = "SELECT last_insert_rowid()"
        return self.execute(sql)[0][0]


def _insert_from_arrays(table: ModelRows, rows: Sequence[Sequence]) -> tuple[str, list]:
    """PostgreSQL's ``INSERT ... SELECT FROM unnest(arrays)`` of ``rows``: one array
    per column, so a few parameters whatever the number of rows; binary, which
    psycopg dumps in C, five times faster than as text."""
    arrays = ", ".join(f"%b::{t}[]" for t in table.db_types)
    return (
        f"INSERT INTO {table.table} ({table.column_list}) SELECT * FROM unnest({arrays})",
        [list(column) for column in zip(*rows, strict=True)],
    )


_MISSING = object()
_TABLES: dict[tuple[type, bool], ModelRows] = {}
# Field types whose Python value goes to either database as it is.
_PLAIN_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BinaryField",
        "BooleanField",
        "CharField",
        "EmailField",
        "ForeignKey",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SlugField",
        "SmallIntegerField",
        "TextField",
        "URLField",
    }
)


class ModelRows:
    """Rows of one model's table for raw inserts: every column but the id.

    Values come from dicts keyed by attribute name (``message_id``); a missing
    one takes the field's default, so a field added to the model later needs
    no change here. Dates and JSON are converted for the database.
    """

    def __init__(self, model: type, sql: Sql):
        concrete = model._meta.concrete_fields
        fields = [f for f in concrete if not f.primary_key]
        self.model = model
        self._pk_position = next(i for i, f in enumerate(concrete) if f.primary_key)
        self.table = model._meta.db_table
        self.columns = [f.column for f in fields]
        self.column_list = ", ".join(f'"{c}"' for c in self.columns)
        self.db_types = [f.db_type(connection) for f in fields]
        self._db_type_of = dict(zip(self.columns, self.db_types, strict=True))
        self._plan = []
        for f in fields:
            kind = f.get_internal_type()
            if kind == "DateTimeField":
                convert = None if sql.postgres else sql.datetime_text
            elif kind in _PLAIN_TYPES:
                convert = None
            elif kind == "JSONField" and f.encoder is None:
                convert = json.dumps  # the text either database parses (Django's own, faster)
            else:

                def convert(value, f=f):
                    return f.get_db_prep_save(value, connection)

            # What Django would store for a missing value: the default, "" or None;
            # worked out once unless the default is made anew for each row.
            per_row = f.has_default() and callable(f.default)
            default = f.get_default if per_row else f.get_default()
            self._plan.append((f.attname, default, per_row, convert))
        self._converters = [convert for *_, convert in self._plan]

    def db_type(self, column: str) -> str:
        return self._db_type_of[column]

    def row(self, values: dict) -> tuple:
        """``converted(values(...))`` in one pass: a third faster, and the worker's
        writes build thousands of rows a second."""
        out = []
        for name, default, per_row, convert in self._plan:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                value = default() if per_row else default
            out.append(value if convert is None else convert(value))
        return tuple(out)

    def rows(self, values: Iterable[dict]) -> list[tuple]:
        return [self.row(v) for v in values]

    def values(self, given: dict) -> list:
        """Every column's value, unconverted: from ``given``, else the field's default."""
        out = []
        for name, default, per_row, _ in self._plan:
            value = given.get(name, _MISSING)
            if value is _MISSING:
                value = default() if per_row else default
            out.append(value)
        return out

    def converted(self, values: Sequence) -> tuple:
        """The row of ``values`` (from ``values()``), ready for the database."""
        return tuple(
            [v if c is None else c(v) for v, c in zip(values, self._converters, strict=True)]
        )

    def saved_instance(self, pk: int, values: Sequence) -> Any:
        """The model instance of the row just inserted from ``values`` with id ``pk``.

        Built the way Django builds one read from the database (positional
        arguments): a third of the cost of keyword arguments, which was a tenth
        of a batch's CPU.
        """
        args = list(values)
        args.insert(self._pk_position, pk)
        return self.model.from_db(DEFAULT_DB_ALIAS, None, args)


@functools.lru_cache(maxsize=128)
def _qmarks(sql: str) -> str:
    """A statement written for Django's cursors ("%s", "%%") as sqlite3 takes it
    ("?", "%"), with the expression Django's SQLite cursor uses; once per statement."""
    from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX

    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


def _naive_text(value: datetime | None) -> str | None:
    """A datetime as SQLite stores it (naive text), as Django's adapter writes it."""
    return None if value is None else connection.ops.adapt_datetimefield_value(value)


def _naive_utc_text(value: datetime | None) -> str | None:
    """``_naive_text`` for a connection in UTC (the usual case): the same text,
    without the adapter's lookups of the connection and the settings on every
    call, which made it a quarter of the embedded worker's time at thousands
    of rows a second."""
    global _last_text
    if value is None:
        return None
    last, text = _last_text
    if value is last:  # a batch's rows share one "now": thousands of times the same object
        return text
    tzinfo = value.tzinfo
    text = str(
        value
        if tzinfo is None
        else (value if tzinfo is UTC else value.astimezone(UTC)).replace(tzinfo=None)
    )
    _last_text = (value, text)  # one tuple: threads read a pair that belongs together
    return text


_last_text: tuple[datetime | None, str | None] = (None, None)


def aware(value: datetime | str | None) -> datetime | None:
    """A datetime read from either database, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def chunks(values: Sequence, size: int = MAX_IN_LIST) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
