"""The store's raw SQL on PostgreSQL: psycopg's own cursor, one statement per table.

Server-side binding: a statement is parsed once, then only values travel
(Django's own cursors interpolate every value into the SQL text on the
client). Many rows go in one statement whatever their number: ``COPY``, or in
a pipeline ``unnest`` of one array per column, dumped in C.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import psycopg
from django.db import connection

from messaging.store.backends.base import Sql, due_parts
from messaging.store.backends.model_rows import ModelRows
from upstream.psycopg import c_timestamptz_loader


class DatabaseSql(Sql):
    """``Sql`` on PostgreSQL."""

    vendor = "postgresql"
    postgres = True
    for_update = " FOR UPDATE"

    def __init__(self) -> None:
        self.cursor = psycopg.Cursor(connection.connection)
        self._pipelined = False
        if connection.timezone_name == "UTC":
            # Timestamps parsed in C (see upstream.psycopg): a tenth of the worker's CPU.
            loader = c_timestamptz_loader()
            if loader is not None:
                self.cursor.adapters.register_loader("timestamptz", loader)

    def dt(self, value: datetime | None) -> datetime | None:
        return value  # psycopg adapts datetimes itself

    @staticmethod
    def json_text(column: str, key: str) -> str:
        return f"{column}->>'{key}'"

    def in_list(self, column: str, values: Sequence) -> tuple[str, list]:
        return f"{column} = ANY(%s)", [list(values)]

    def execute(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self.execute_marked(sql, params)

    def execute_marked(self, sql: str, params: Sequence = ()) -> list[tuple]:
        # Not prepared: a prepared statement soon gets a generic plan, which for
        # ``= ANY(array)`` of unknown size is a sequential scan.
        self.cursor.execute(sql, params, prepare=False)
        return self.cursor.fetchall() if self.cursor.description else []

    def use_indexes(self, ordered: bool = False) -> None:
        """Every statement of the hot path looks rows up by key: an index is always
        right. But a table filled in the last minute has no statistics yet, and
        the planner then takes it for small (a sequential scan per lookup) or the
        queue for empty (sorting every due part rather than walking the claim
        index in order). ``ordered`` also rules out sorting.
        """
        ordering = "off" if ordered else "on"
        # One round trip (no parameters: several statements may go at once).
        self.cursor.execute(
            "SET LOCAL enable_seqscan = off; "
            f"SET LOCAL enable_bitmapscan = {ordering}; SET LOCAL enable_sort = {ordering}"
        )

    def serialize(self, key: int) -> None:
        self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,), prepare=False)

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[None]:
        """A batch of results is six statements (an UPDATE or INSERT per table):
        one round trip for all instead of one each, which under load was a third
        of a batch's time."""
        with self.cursor.connection.pipeline():
            self._pipelined = True
            try:
                yield
            finally:
                self._pipelined = False

    @property
    def in_pipeline(self) -> bool:
        return self._pipelined

    def update_rows(self, model: type, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """One statement for all the rows (``FROM unnest(arrays)``): row by row,
        even pipelined, the server parses, plans and runs a statement per row,
        and that was most of its time under load."""
        rows = list(rows)
        if not rows:
            return
        table = self.table(model)
        rows = table.converted_updates(columns, rows)
        if len(rows) == 1:
            assignments = ", ".join(f'"{c}" = %s' for c in columns)
            self.cursor.executemany(f'UPDATE {table.table} SET {assignments} WHERE "id" = %s', rows)
            return
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

    def insert(self, model: type, values: Sequence[dict]) -> None:
        """``COPY``, the fastest bulk load; in a ``pipeline``, which ``COPY``
        cannot join, one ``INSERT ... SELECT FROM unnest(arrays)``."""
        if not values:
            return
        table = self.table(model)
        rows = table.rows(values)
        if self._pipelined:
            self.cursor.execute(*_insert_from_arrays(table, rows), prepare=False)
            return
        with self.cursor.copy(f"COPY {table.table} ({table.column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def insert_returning_ids(self, table: ModelRows, rows: Sequence[Sequence]) -> list[int]:
        if len(rows) > 1:
            statement, params = _insert_from_arrays(table, rows)
            return sorted(r[0] for r in self.execute(statement + " RETURNING id", params))
        return super().insert_returning_ids(table, rows)

    def last_id(self, table: str) -> int:
        return self.execute(f"SELECT currval(pg_get_serial_sequence('{table}', 'id'))")[0][0]

    def claim_due_parts(
        self, returning: Sequence[str], guard: str, claim: Sequence, due: Sequence
    ) -> list[tuple]:
        # Oldest first, walking part_claim_idx (state, next_attempt_at) and stopping
        # at the limit; ordering by the id too would sort every due part (the
        # caller puts the batch in order).
        # Skipping the messages locked too: a claim never waits for a batch of
        # results (which locks the messages it settles), so they never deadlock.
        columns = ", ".join(f'p."{c}"' for c in returning)
        return self.execute(
            f"WITH due AS ({due_parts(guard)}ORDER BY p.next_attempt_at LIMIT %s "
            "FOR UPDATE OF p, m SKIP LOCKED) "
            "UPDATE messaging_messagepart p SET state = %s, worker = %s, lease_until = %s, "
            f"attempts = p.attempts + 1 FROM due WHERE p.id = due.id RETURNING {columns}",
            [*due, *claim],
        )


def _insert_from_arrays(table: ModelRows, rows: Sequence[Sequence]) -> tuple[str, list]:
    """``INSERT ... SELECT FROM unnest(arrays)`` of ``rows``: one array per column,
    so a few parameters whatever the number of rows; binary, which psycopg dumps
    in C, five times faster than as text."""
    arrays = ", ".join(f"%b::{t}[]" for t in table.db_types)
    return (
        f"INSERT INTO {table.table} ({table.column_list}) SELECT * FROM unnest({arrays})",
        [list(column) for column in zip(*rows, strict=True)],
    )
