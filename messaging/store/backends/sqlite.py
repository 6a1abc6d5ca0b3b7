"""The store's raw SQL on SQLite: sqlite3's own cursor, one prepared statement for many rows.

sqlite3's cursor is given "?" placeholders (see ``_qmarks``): Django's rewrites
each statement's "%s" with a regular expression on every call, 3.4 ms for a
batch's 14,000-value INSERT, 6 % of the embedded batch ingest. SQLite keeps
datetimes as naive text in the connection's time zone, written here as Django
writes them. Writers are one at a time, so nothing here locks rows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from django.db import connection

from messaging.store.backends.base import Sql, due_parts

# "%s" not after "%" ("%%s" is a literal "%s"): the paramstyle Django's cursors take.
_PYFORMAT_MARK = re.compile(r"(?<!%)%s")


class DatabaseSql(Sql):
    """``Sql`` on SQLite."""

    vendor = "sqlite"
    mark = "?"

    def __init__(self) -> None:
        self.cursor = connection.connection.cursor()
        utc = connection.timezone_name == "UTC"
        self.datetime_to_db = _naive_utc_text if utc else _naive_text

    def dt(self, value: datetime | None) -> str | None:
        return self.datetime_to_db(value)

    @staticmethod
    def json_text(column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def in_list(self, column: str, values: Sequence) -> tuple[str, list]:
        # "?" already: ``_qmarks`` leaves them as they are, and has no long list to rewrite.
        return f"{column} IN ({','.join(['?'] * len(values))})", list(values)

    def execute(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self.execute_marked(_qmarks(sql), params)

    def execute_marked(self, sql: str, params: Sequence = ()) -> list[tuple]:
        self.cursor.execute(sql, params)
        return self.cursor.fetchall() if self.cursor.description else []

    def update_rows(self, model: type, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        rows = list(rows)
        if not rows:
            return
        table = self.table(model)
        assignments = ", ".join(f'"{c}" = ?' for c in columns)
        self.cursor.executemany(
            f'UPDATE {table.table} SET {assignments} WHERE "id" = ?',
            table.converted_updates(columns, rows),
        )

    def insert(self, model: type, values: Sequence[dict]) -> None:
        if not values:
            return
        table = self.table(model)
        marks = ", ".join(["?"] * len(table.columns))
        self.cursor.executemany(
            f"INSERT INTO {table.table} ({table.column_list}) VALUES ({marks})",
            table.rows(values),
        )

    def last_id(self, table: str) -> int:
        return self.execute_marked("SELECT last_insert_rowid()")[0][0]

    def claim_due_parts(
        self, returning: Sequence[str], guard: str, claim: Sequence, due: Sequence
    ) -> list[tuple]:
        # Walking part_claim_idx (state, next_attempt_at, id) in order, stopping at
        # the limit. SQLite's RETURNING takes bare column names only.
        columns = ", ".join(f'"{c}"' for c in returning)
        return self.execute(
            "UPDATE messaging_messagepart SET state = %s, worker = %s, lease_until = %s, "
            f"attempts = attempts + 1 WHERE id IN ({due_parts(guard)}"
            f"ORDER BY p.next_attempt_at, p.id LIMIT %s) RETURNING {columns}",
            [*claim, *due],
        )


@functools.lru_cache(maxsize=128)
def _qmarks(sql: str) -> str:
    """A statement written for Django's cursors ("%s", "%%") as sqlite3 takes it
    ("?", "%"); worked out once per statement."""
    return _PYFORMAT_MARK.sub("?", sql).replace("%%", "%")


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
