"""Data migrations: keys out of stored URLs (0008), unreadable times (0009), SMSC ids
get their match keys (0010)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]

BEFORE = [("messaging", "0007_smsc_ids_kept_whole")]
AFTER = [("messaging", "0008_redact_keys_in_stored_urls")]


@pytest.fixture(autouse=True)
def _back_to_the_latest_schema():
    """Each test stops at an old migration: the tests after it need the latest schema."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_keys_in_stored_urls_are_redacted_and_other_urls_left_alone():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    Message = apps.get_model("messaging", "Message")
    ApiKey = apps.get_model("messaging", "ApiKey")
    with_key = Message.objects.create(
        dst="lisa",
        text="hi",
        encoding="gsm7",
        parts_count=1,
        created_at=timezone.now(),
        updated_at=timezone.now(),
        callback_url="http://127.0.0.1:8080/v1/send?api_key=sk_abcdefgh123&dst=1",
    )
    plain = Message.objects.create(
        dst="lisa",
        text="hi",
        encoding="gsm7",
        parts_count=1,
        created_at=timezone.now(),
        updated_at=timezone.now(),
        callback_url="https://hooks.example.com/sms?token=abc",
    )
    key = ApiKey.objects.create(
        name="k",
        prefix="abcdefgh",
        key_hash="0" * 64,
        default_callback_url="https://example.com/cb?API_KEY=sk_zzz",
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)

    with_key.refresh_from_db()
    plain.refresh_from_db()
    key.refresh_from_db()
    assert with_key.callback_url == "http://127.0.0.1:8080/v1/send?api_key=REDACTED&dst=1"
    assert plain.callback_url == "https://hooks.example.com/sms?token=abc"
    assert key.default_callback_url == "https://example.com/cb?API_KEY=REDACTED"


def test_times_past_what_python_can_read_are_brought_back_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL stores moments past the year 9999")
    before = [("messaging", "0008_redact_keys_in_stored_urls")]
    after = [("messaging", "0009_clamp_unreadable_times")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    # The model as it was then: today's has columns a later migration adds.
    Message = executor.loader.project_state(before).apps.get_model("messaging", "Message")
    now = timezone.now()
    message = Message.objects.create(
        dst="lisa", text="hi", encoding="gsm7", parts_count=1, created_at=now, updated_at=now
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE messaging_message SET schedule_at = '10000-01-01 13:59:59+00', "
            "validity_until = '10000-01-01 13:59:59+00' WHERE id = %s",
            [message.pk],
        )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)

    message.refresh_from_db()  # psycopg could not load the year 10000
    assert message.schedule_at.year == 9999
    assert message.validity_until.year == 9999


def test_stored_smsc_ids_get_their_match_key():
    before = [("messaging", "0009_clamp_unreadable_times")]
    after = [("messaging", "0010_smsc_ids_kept_as_given_matched_by_key")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    Message = apps.get_model("messaging", "Message")
    MessagePart = apps.get_model("messaging", "MessagePart")
    Receipt = apps.get_model("messaging", "Receipt")
    now = timezone.now()
    message = Message.objects.create(
        dst="lisa", text="hi", encoding="gsm7", parts_count=2, created_at=now, updated_at=now
    )
    for index, smsc_id in ((1, "0003000516"), (2, None)):
        MessagePart.objects.create(
            message=message, index=index, short_message=b"hi", next_attempt_at=now, smsc_id=smsc_id
        )
    Receipt.objects.create(smsc_id="M1000580", received_at=now)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)

    apps = executor.loader.project_state(after).apps
    parts = apps.get_model("messaging", "MessagePart").objects.order_by("index")
    assert list(parts.values_list("smsc_id", "match_key")) == [
        ("0003000516", "3000516"),
        (None, None),
    ]
    receipts = apps.get_model("messaging", "Receipt").objects.values_list("smsc_id", "match_key")
    assert list(receipts) == [("M1000580", "m1000580")]
