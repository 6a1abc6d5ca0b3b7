"""Times stored past what Python (and so psycopg) can read, brought back within it.

Before the API bounded ``schedule`` and ``validity`` (messaging/api/send_times.py),
``9999-12-31T23:59:59-14:00`` was stored on PostgreSQL as a moment in the year
10000. psycopg cannot load such a value: every claim of the worker failed, and
every list that showed the row answered 500. Such a row is moved to the last
day Python can hold, which means the same thing (never, in practice), and can
be read, listed and cancelled again. Only the rows past that day are touched;
on SQLite (text) none can be stored, so nothing matches.
"""

from datetime import UTC, datetime

from django.db import migrations

LAST_READABLE = datetime(9999, 12, 30, tzinfo=UTC)

TIME_FIELDS = (
    ("Message", "schedule_at"),
    ("Message", "validity_until"),
    ("MessagePart", "next_attempt_at"),
)


def clamp_unreadable_times(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for model_name, field in TIME_FIELDS:
        model = apps.get_model("messaging", model_name)
        model.objects.filter(**{f"{field}__gt": LAST_READABLE}).update(**{field: LAST_READABLE})


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0008_redact_keys_in_stored_urls"),
    ]

    operations = [
        migrations.RunPython(clamp_unreadable_times, migrations.RunPython.noop, elidable=True),
    ]
