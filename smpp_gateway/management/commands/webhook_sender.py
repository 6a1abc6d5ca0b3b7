"""``manage.py webhook_sender``: POST webhooks until SIGINT or SIGTERM.

For the distributed set-up; ``manage.py serve`` runs the same sender in its own
process. Any number may run against PostgreSQL: they share the work through the
store (see ``messaging.webhooks``).
"""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand

from messaging.webhooks import WebhookSender


class Command(BaseCommand):
    help = "Send the webhooks of receipts, final states and incoming messages."

    def handle(self, *args, **options):
        sender = WebhookSender()

        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, sender.stop)
            await sender.run()

        asyncio.run(main())
