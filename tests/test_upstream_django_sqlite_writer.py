"""upstream.django_sqlite_writer: Django's SQLite backend still starts and ends
transactions through the private methods the writers' queue overrides.

Fails when Django changes them; checks that on another Django the backend is
Django's own (no queue) with a warning.
"""

from __future__ import annotations

import inspect
import logging

import pytest
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3 import base as sqlite_base

from upstream import django_sqlite_writer
from upstream.django_sqlite_writer import DatabaseWrapper, writer_queue

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the writers' queue is SQLite's"
)


def test_the_overridden_methods_are_still_where_django_starts_and_ends_transactions():
    for name in ("_start_transaction_under_autocommit", "_commit", "_rollback", "_close"):
        assert callable(getattr(sqlite_base.DatabaseWrapper, name)), name
    # BEGIN on SQLite: set_autocommit(False, force_begin_...) calls the first.
    set_autocommit = inspect.getsource(BaseDatabaseWrapper.set_autocommit)
    assert "self._start_transaction_under_autocommit()" in set_autocommit
    assert "force_begin_transaction_with_broken_autocommit=True" in inspect.getsource(
        __import__("django.db.transaction", fromlist=["Atomic"]).Atomic.__enter__
    )
    # ... and the three ways out go through the other three.
    assert "self._commit()" in inspect.getsource(BaseDatabaseWrapper.commit)
    assert "self._rollback()" in inspect.getsource(BaseDatabaseWrapper.rollback)
    assert "self._close()" in inspect.getsource(BaseDatabaseWrapper.close)
    begin = inspect.getsource(sqlite_base.DatabaseWrapper._start_transaction_under_autocommit)
    assert 'execute("BEGIN")' in begin and "transaction_mode" in begin


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_transaction_holds_the_turn_from_begin_to_commit():
    from django.db import connections, transaction

    wrapper = connections["default"]  # this thread's
    assert isinstance(wrapper, DatabaseWrapper) and wrapper.queues_writers
    queue = writer_queue(str(wrapper.settings_dict["NAME"]))
    with transaction.atomic():
        assert wrapper._queue_turn is queue
        assert not queue.acquire(timeout=0)  # held by this transaction
    assert wrapper._queue_turn is None
    assert queue.acquire(timeout=0)  # handed back at COMMIT
    queue.release()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_on_another_django_the_backend_is_djangos_with_a_warning(another_version, caplog):
    with caplog.at_level(logging.WARNING, logger="upstream"):
        wrapper = DatabaseWrapper(connection.settings_dict.copy(), alias="another_version")
    assert not wrapper.queues_writers
    assert django_sqlite_writer.WHAT in caplog.text
    queue = writer_queue(str(wrapper.settings_dict["NAME"]))
    assert queue.acquire(timeout=0)  # nobody holds it: BEGIN below must not wait for it
    try:
        wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        assert wrapper._queue_turn is None  # Django's own BEGIN, no turn taken
        wrapper.rollback()
        wrapper.set_autocommit(True)
    finally:
        wrapper.close()
        queue.release()
