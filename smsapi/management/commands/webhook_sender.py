"""``manage.py webhook_sender``: POST webhooks until SIGINT or SIGTERM.

For the distributed set-up; ``manage.py serve`` runs the same sender in its own
process. Any number may run against PostgreSQL: they share the work through the
store (see ``messaging.webhooks.delivery``).

Supervised (``messaging.supervision``): if the sender's ``run()`` raises or
returns on its own, the death is logged with its traceback and the command
exits with ``EXIT_TASK_DIED`` (70); SIGINT and SIGTERM finish the POSTs in
flight and exit 0.
"""

from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand, CommandError

from messaging.supervision import LongLivedTask, run_supervised
from messaging.webhooks.delivery import WebhookSender


def sender_task(sender: WebhookSender) -> LongLivedTask:
    """The sender as a supervised task: ``stop()`` lets the POSTs in flight end
    (each bounded by the webhook timeout) and records them."""
    return LongLivedTask(
        name="webhook-sender",
        run=sender.run,
        stop=sender.stop,
        stop_timeout=sender.config.timeout + 5,
    )


class Command(BaseCommand):
    help = "Send the webhooks of receipts, final states and incoming messages."

    def handle(self, *args, **options):
        sender = WebhookSender()
        code = asyncio.run(run_supervised("webhook_sender", [sender_task(sender)]))
        if code:
            raise CommandError("a task of webhook_sender died (see the log above)", returncode=code)
