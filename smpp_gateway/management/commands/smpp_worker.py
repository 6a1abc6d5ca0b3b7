"""``manage.py smpp_worker``: own the SMPP bind until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import fcntl
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from smpp_gateway.worker import SMPPWorker, WorkerConfig
from smsapi.gc_tuning import tune_garbage_collector


def hold_sqlite_worker_lock():
    """SQLite cannot share its queue between workers safely: allow one.

    Returns the open lock file (keep it open for the life of the process).
    """
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(settings.DATA_DIR / "smpp_worker.lock", "w")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CommandError(
            "another smpp_worker is already running on this SQLite store; with SQLite only "
            "one worker may run (use PostgreSQL for several)"
        ) from None
    return lock


class Command(BaseCommand):
    help = "Bind to the SMSC and move messages between the store and the SMSC."

    def handle(self, *args, **options):
        lock = hold_sqlite_worker_lock() if connection.vendor == "sqlite" else None
        worker = SMPPWorker(WorkerConfig.from_settings())
        tune_garbage_collector()

        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, worker.stop)
            await worker.run()

        try:
            asyncio.run(main())
        finally:
            if lock is not None:
                lock.close()
