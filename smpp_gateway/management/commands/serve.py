"""``manage.py serve``: the whole service in one process (the embedded set-up).

Daphne serves HTTP and WebSockets; the SMPP worker runs on the same event loop,
so the in-process channel layer carries every bell without Redis. With
``--simulator`` the bundled SMSC simulator runs there too. Ctrl-C stops the
worker first (it drains its window and unbinds), then the rest.
"""

from __future__ import annotations

import asyncio
import logging

import daphne.server  # noqa: F401 - installs the asyncio reactor before Twisted is used
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from twisted.internet import defer, reactor

from smpp_gateway.management.commands.smpp_worker import hold_sqlite_worker_lock
from smpp_gateway.worker import SMPPWorker, WorkerConfig

logger = logging.getLogger("smpp_gateway.serve")


class Command(BaseCommand):
    help = "Run the HTTP/WebSocket server and the SMPP worker in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=settings.HTTP_PORT)
        parser.add_argument("--no-worker", action="store_true", help="HTTP only")
        parser.add_argument(
            "--simulator",
            type=int,
            metavar="PORT",
            help="also run the bundled SMSC simulator on PORT and bind to it",
        )

    def handle(self, *args, **options):
        from channels.routing import get_default_application

        lock = None
        worker = None
        simulator = None
        if options["simulator"]:
            from smpp_gateway.simulator import SimulatorConfig, SMSCSimulator

            simulator = SMSCSimulator(
                SimulatorConfig(
                    host="127.0.0.1",
                    port=options["simulator"],
                    system_id=settings.SMPP_USER,
                    password=settings.SMPP_PASSWD,
                )
            )
        if not options["no_worker"]:
            if connection.vendor == "sqlite":
                lock = hold_sqlite_worker_lock()
            overrides = {}
            if simulator is not None:
                from dataclasses import replace

                base = WorkerConfig.from_settings()
                overrides["session"] = replace(
                    base.session, host="127.0.0.1", port=options["simulator"]
                )
            worker = SMPPWorker(WorkerConfig.from_settings(**overrides))

        tasks = {}

        def start():
            if simulator is not None:
                tasks["simulator"] = asyncio.ensure_future(simulator.start())
            if worker is not None:
                tasks["worker"] = asyncio.ensure_future(worker.run())

        def shut_down():
            async def stop():
                if worker is not None:
                    worker.stop()
                    await asyncio.wait(
                        [tasks["worker"]], timeout=settings.SMPP_RESPONSE_TIMEOUT + 5
                    )
                if simulator is not None:
                    await simulator.stop()

            return defer.Deferred.fromFuture(asyncio.ensure_future(stop()))

        reactor.callWhenRunning(start)
        reactor.addSystemEventTrigger("before", "shutdown", shut_down)
        endpoints = build_endpoint_description_strings(host=options["host"], port=options["port"])
        self.stdout.write(f"SMS API listening on http://{options['host']}:{options['port']}/")
        try:
            Server(
                application=get_default_application(),
                endpoints=endpoints,
                signal_handlers=True,
                verbosity=0,
            ).run()
        finally:
            if lock is not None:
                lock.close()
