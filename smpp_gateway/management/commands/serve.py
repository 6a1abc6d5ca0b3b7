"""``manage.py serve``: the whole service in one process (the embedded set-up).

Daphne serves HTTP and WebSockets; the SMPP worker runs on the same event loop,
so the in-process channel layer carries every bell without Redis. With
``--simulator`` the bundled SMSC simulator runs there too, and the webhook
sender always does (unless ``--no-webhooks``). Ctrl-C stops the worker first
(it drains its window and unbinds), then the rest.

With ``HTTPS_CERT`` and ``HTTPS_KEY`` (or ``--https-cert``/``--https-key``) it
also serves HTTPS on ``HTTPS_PORT``; with ``HTTPS_CLIENT_CA`` every HTTPS client
must present a certificate signed by that CA (see ``smsapi.https``).
"""

from __future__ import annotations

import asyncio
import logging

import daphne.server  # noqa: F401 - installs the asyncio reactor before Twisted is used
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from twisted.internet import defer, reactor

from messaging.webhooks import WebhookSender
from smpp_gateway.management.commands.smpp_worker import hold_sqlite_worker_lock
from smpp_gateway.worker import SMPPWorker, WorkerConfig
from smsapi.https import listen_https, tls_options

logger = logging.getLogger("smpp_gateway.serve")


class Command(BaseCommand):
    help = "Run the HTTP/WebSocket server and the SMPP worker in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=settings.HTTP_PORT)
        parser.add_argument("--no-worker", action="store_true", help="HTTP only")
        parser.add_argument(
            "--no-webhooks", action="store_true", help="leave webhooks to `webhook_sender`"
        )
        parser.add_argument("--https-port", type=int, default=settings.HTTPS_PORT)
        parser.add_argument("--https-cert", default=settings.HTTPS_CERT, help="PEM cert (chain)")
        parser.add_argument("--https-key", default=settings.HTTPS_KEY, help="PEM private key")
        parser.add_argument(
            "--https-client-ca",
            default=settings.HTTPS_CLIENT_CA,
            help="PEM CA(s): HTTPS clients must present a certificate signed by one",
        )
        parser.add_argument("--no-http", action="store_true", help="HTTPS only")
        parser.add_argument(
            "--simulator",
            type=int,
            metavar="PORT",
            help="also run the bundled SMSC simulator on PORT and bind to it",
        )

    def handle(self, *args, **options):
        from channels.routing import get_default_application

        https = None
        if options["https_cert"] or options["https_key"]:
            if not (options["https_cert"] and options["https_key"]):
                raise CommandError("HTTPS needs both a certificate and its key")
            https = tls_options(
                options["https_cert"], options["https_key"], options["https_client_ca"]
            )
        elif options["https_client_ca"] or options["no_http"]:
            raise CommandError("HTTPS_CLIENT_CA and --no-http need HTTPS_CERT and HTTPS_KEY")
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
        sender = None if options["no_webhooks"] else WebhookSender()

        tasks = {}

        def start():
            if simulator is not None:
                tasks["simulator"] = asyncio.ensure_future(simulator.start())
            if worker is not None:
                tasks["worker"] = asyncio.ensure_future(worker.run())
            if sender is not None:
                tasks["webhooks"] = asyncio.ensure_future(sender.run())
            if https is not None:
                listen_https(server, options["https_port"], options["host"], https)

        def shut_down():
            async def stop():
                if sender is not None:
                    sender.stop()
                if worker is not None:
                    worker.stop()
                    await asyncio.wait(
                        [tasks["worker"]], timeout=settings.SMPP_RESPONSE_TIMEOUT + 5
                    )
                if sender is not None:
                    await asyncio.wait([tasks["webhooks"]], timeout=settings.WEBHOOK_TIMEOUT + 5)
                if simulator is not None:
                    await simulator.stop()

            return defer.Deferred.fromFuture(asyncio.ensure_future(stop()))

        reactor.callWhenRunning(start)
        reactor.addSystemEventTrigger("before", "shutdown", shut_down)
        endpoints = build_endpoint_description_strings(host=options["host"], port=options["port"])
        server = Server(
            application=get_default_application(),
            endpoints=endpoints,
            signal_handlers=True,
            verbosity=0,
        )
        if options["no_http"]:
            server.endpoints = []  # daphne wants one at construction; HTTPS is ours
        else:
            self.stdout.write(f"SMS API listening on http://{options['host']}:{options['port']}/")
        if https is not None:
            self.stdout.write(
                f"SMS API listening on https://{options['host']}:{options['https_port']}/"
                + (" (client certificates required)" if options["https_client_ca"] else "")
            )
        try:
            server.run()
        finally:
            if lock is not None:
                lock.close()
