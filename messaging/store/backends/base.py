"""The interface of the store's raw SQL, and the SQL both databases share.

The worker writes a few rows per message at thousands of messages a second.
Django's ``bulk_update`` builds a ``CASE WHEN`` per field and row (quadratic
in the batch) and ``bulk_create`` makes a model instance per row; both cost
more than the database itself. Here rows are plain tuples, written in as few
statements as each database allows (``postgresql``: one per table; ``sqlite``:
one prepared statement run for many rows). Everything runs on Django's
connection, inside the caller's ``transaction.atomic()``.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import import_module
from typing import Any

from django.db import connection

from messaging.store.backends.model_rows import ModelRows

# PostgreSQL binds at most 65535 parameters per statement, SQLite 32766.
MAX_IN_LIST = 10_000

# Django's vendor name -> the module of its implementation (this package's).
BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql"}


def due_parts(guard: str) -> str:
    """The ids of the parts due to be sent (``claim_due_parts``): in a state the
    ``guard`` on ``p.state`` admits, due by %s, within their validity at %s, of
    messages for the connector %s."""
    return (
        "SELECT p.id FROM messaging_messagepart p "
        "JOIN messaging_message m ON m.id = p.message_id "
        f"WHERE {guard} AND p.next_attempt_at <= %s "
        "AND (m.validity_until IS NULL OR m.validity_until > %s) AND m.connector = %s "
    )


@functools.cache
def backend_class(vendor: str) -> type[Sql]:
    """The ``Sql`` implementation for Django's ``connection.vendor`` (looked up once)."""
    try:
        module = import_module(f"{__package__}.{BACKENDS[vendor]}")
    except KeyError:
        raise NotImplementedError(f"the store has no SQL for {vendor!r} databases") from None
    return module.DatabaseSql


class Sql(ABC):
    """Statements on the default connection; use inside ``transaction.atomic()``.

    ``Sql()`` gives the implementation for the connection's database. Statements
    are written as for Django's cursors ("%s"); ``mark`` is the placeholder the
    implementation's own cursor takes, for statements built here.
    """

    vendor = ""
    postgres = False  # PostgreSQL
    mark = "%s"
    for_update = ""  # what locks the rows a SELECT reads until commit
    # How a datetime column's value goes to the database (None: as it is).
    datetime_to_db: Callable[[datetime | None], Any] | None = None
    cursor: Any

    def __new__(cls) -> Sql:
        if cls is Sql:
            connection.ensure_connection()
            cls = backend_class(connection.vendor)
        return super().__new__(cls)

    def __enter__(self) -> Sql:
        # The cursor is the driver's own: have its errors raised as Django's
        # (IntegrityError, OperationalError...), as a Django cursor's would be.
        self._errors = connection.wrap_database_errors
        self._errors.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
        self._errors.__exit__(*exc_info)

    def close(self) -> None:
        self.cursor.close()

    def table(self, model: type) -> ModelRows:
        """The ``ModelRows`` of ``model`` (built once per model and database)."""
        key = (model, self.vendor)
        table = _TABLES.get(key)
        if table is None:
            table = _TABLES[key] = ModelRows(model, self.datetime_to_db)
        return table

    # --- what each database does its own way --------------------------------------------

    @abstractmethod
    def dt(self, value: datetime | None) -> Any:
        """A datetime as this database stores it."""
        ...

    @abstractmethod
    def in_list(self, column: str, values: Sequence) -> tuple[str, list]:
        """``column IN (...)`` as SQL and parameters."""
        ...

    @staticmethod
    @abstractmethod
    def json_text(column: str, key: str) -> str:
        """SQL for the text at ``key`` of the JSON object in ``column``."""
        ...

    @abstractmethod
    def execute(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """A statement written as for Django's cursors ("%s"); its rows, if any."""
        ...

    @abstractmethod
    def execute_marked(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """``execute`` of a statement written with ``self.mark``."""
        ...

    @abstractmethod
    def update_rows(self, model: type, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """``UPDATE table SET columns... WHERE id = ...``; each row is (values..., id),
        values as Python has them (datetimes are converted here)."""
        ...

    @abstractmethod
    def insert(self, model: type, values: Sequence[dict]) -> None:
        """Insert rows of ``model`` given as {attribute: value} (defaults for the rest);
        ids are not returned (see ``last_id``)."""
        ...

    @abstractmethod
    def last_id(self, table: str) -> int:
        """The id this connection last gave a row of ``table`` (its highest so far)."""
        ...

    @abstractmethod
    def claim_due_parts(
        self, returning: Sequence[str], guard: str, claim: Sequence, due: Sequence
    ) -> list[tuple]:
        """Move up to a limit of the parts due, oldest first, to ``claim``'s values
        (state, worker, lease_until) with one try more; the ``returning`` columns
        of each. ``due``: ``guard``'s parameters, now, now, the connector, the limit."""
        ...

    # --- what only some databases need (nothing to do by default) ---------------------

    def use_indexes(self, ordered: bool = False) -> None:  # noqa: B027 (a no-op by default)
        """Plan this transaction's statements on the indexes, whatever the statistics say."""

    def serialize(self, key: int) -> None:  # noqa: B027 (a no-op by default)
        """Let one transaction at a time (of any process) past this point, until commit."""

    def pipeline(self) -> contextlib.AbstractContextManager:
        """Statements that return nothing, sent together and answered together.
        Errors may come only when the block ends."""
        return contextlib.nullcontext()

    @property
    def in_pipeline(self) -> bool:
        """Inside ``pipeline()``."""
        return False

    # --- shared -------------------------------------------------------------------------

    def insert_returning_ids(self, table: ModelRows, rows: Sequence[Sequence]) -> list[int]:
        """Insert rows and return their new ids, in the order of ``rows``.

        Ids come from a sequence (PostgreSQL) or AUTOINCREMENT (SQLite), taken
        row after row: in the order of the rows, they rise. So the ids one
        statement returns, sorted, are the rows' ids in order.
        """
        row_marks = "(" + ", ".join([self.mark] * len(table.columns)) + ")"
        ids: list[int] = []
        for batch in chunks(rows, max(1, 30_000 // len(table.columns))):
            params = [value for row in batch for value in row]
            returned = self.execute_marked(
                f"INSERT INTO {table.table} ({table.column_list}) VALUES "
                f"{', '.join([row_marks] * len(batch))} RETURNING id",
                params,
            )
            ids += sorted(r[0] for r in returned)
        return ids


_TABLES: dict[tuple[type, str], ModelRows] = {}


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
