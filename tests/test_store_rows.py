"""The store's named rows: every column a row class declares is a column of its table.

Rows are read by name from one declaration per row (``result_rows``, ``claiming``);
a column renamed or dropped in a model must fail here, not write a wrong column.
"""

from __future__ import annotations

from messaging.models import Message, MessagePart, Receipt
from messaging.store import claiming, result_rows


def _columns(model: type) -> set[str]:
    return {f.column for f in model._meta.concrete_fields}


def test_every_column_a_row_reads_is_a_column_of_its_table():
    assert set(result_rows.PART_READ) <= _columns(MessagePart)
    assert set(result_rows.MESSAGE_READ) <= _columns(Message)
    assert set(result_rows.WaitingReceipt._fields) <= _columns(Receipt)
    assert set(claiming.DuePart._fields) <= _columns(MessagePart)
    assert set(claiming.ClaimedMessage._fields) <= _columns(Message)


def test_a_batch_writes_back_what_it_may_change_and_never_the_keys():
    assert result_rows.PART_COLUMNS == (
        "state",
        "command_status",
        "bind_id",
        "sequence_number",
        "lease_until",
        "smsc_id",
        "match_key",
        "submitted_at",
        "final_at",
        "next_attempt_at",
        "possibly_duplicated",
        "error_code",
        "attempts",
        "connector",  # the connector whose SMSC answered (issue 24)
    )
    assert result_rows.MESSAGE_COLUMNS == (
        "state",
        "updated_at",
        "possibly_duplicated",
        "command_status",
        "error_code",
        "submitted_at",
        "final_at",
    )


def test_a_row_is_made_from_the_columns_in_the_order_declared():
    values = [f"v{i}" for i in range(len(result_rows.PART_READ))]
    part = result_rows._PartRow(*values)
    assert [getattr(part, c) for c in result_rows.PART_READ] == values
    assert not part.dirty
    values = [f"m{i}" for i in range(len(result_rows.MESSAGE_READ))]
    message = result_rows._MessageRow(*values)
    assert [getattr(message, c) for c in result_rows.MESSAGE_READ] == values
    assert message.parts == [] and not message.dirty
