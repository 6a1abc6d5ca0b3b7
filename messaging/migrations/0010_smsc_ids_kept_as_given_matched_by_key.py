"""SMSC ids are kept as the SMSC gave them and matched by a key in its own column.

Until now a part's SMSC id was stored lower-cased and receipts were looked up
under several variants of theirs; an upper-case id in a receipt that came
before its response, or a zero-padded id in the response, was never matched
(issue 19). Parts and receipts now carry ``match_key``
(``smpp.smsc_ids.match_key``), indexed, and the old ``smsc_id`` indexes go.
Existing rows get their key here, before the indexes are built. Ids stored
lower-cased before this stay so: their original case is gone.
"""

from django.db import migrations, models

from smpp.smsc_ids import match_key

BATCH = 2000


def fill_match_keys(apps, schema_editor):
    for model_name in ("MessagePart", "Receipt"):
        model = apps.get_model("messaging", model_name)
        rows = model.objects.exclude(smsc_id__isnull=True).exclude(smsc_id="")
        batch = []
        for row in rows.only("id", "smsc_id").iterator(chunk_size=BATCH):
            row.match_key = match_key(row.smsc_id)
            batch.append(row)
            if len(batch) >= BATCH:
                model.objects.bulk_update(batch, ["match_key"])
                batch = []
        model.objects.bulk_update(batch, ["match_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0009_clamp_unreadable_times"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="messagepart",
            name="part_smsc_id_idx",
        ),
        migrations.RemoveIndex(
            model_name="receipt",
            name="receipt_smsc_id_idx",
        ),
        migrations.RemoveIndex(
            model_name="receipt",
            name="receipt_unmatched_idx",
        ),
        migrations.AddField(
            model_name="messagepart",
            name="match_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="receipt",
            name="match_key",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.RunPython(fill_match_keys, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="messagepart",
            index=models.Index(fields=["match_key"], name="part_match_key_idx"),
        ),
        migrations.AddIndex(
            model_name="receipt",
            index=models.Index(
                condition=models.Q(("matched_at__isnull", True)),
                fields=["match_key"],
                name="receipt_unmatched_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="receipt",
            index=models.Index(fields=["match_key"], name="receipt_match_key_idx"),
        ),
    ]
