"""API keys in callback URLs stored before they were redacted on the way in.

A ``callback_url=...?api_key=sk_...`` (the webhook pointing back at this API)
kept a working key in the database. New URLs are redacted when accepted
(``messaging.webhooks.targets.clean_callback_url``); this does the same to the
rows written before. Only rows that mention ``api_key=`` are read.
"""

from django.db import migrations

from messaging.url_secrets import redact_url

URL_FIELDS = (
    ("Message", "callback_url"),
    ("ApiKey", "default_callback_url"),
    ("WebhookDelivery", "url"),
)


def redact_stored_urls(apps, schema_editor):
    for model_name, field in URL_FIELDS:
        model = apps.get_model("messaging", model_name)
        rows = model.objects.filter(**{f"{field}__icontains": "api_key="})
        for pk, url in rows.values_list("pk", field).iterator():
            redacted = redact_url(url)
            if redacted != url:
                model.objects.filter(pk=pk).update(**{field: redacted})


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0007_smsc_ids_kept_whole"),
    ]

    operations = [
        migrations.RunPython(redact_stored_urls, migrations.RunPython.noop, elidable=True),
    ]
