"""``manage.py serve``: the whole service in one process (the embedded set-up).

Daphne serves HTTP and WebSockets; the SMPP worker runs on the same event loop,
so the in-process channel layer carries every bell without Redis. With
``--simulator`` the bundled SMSC simulator runs there too, and the webhook
sender always does (unless ``--no-webhooks``). Ctrl-C stops the worker first
(it drains its window and unbinds), then the rest.

With ``HTTPS_CERT`` and ``HTTPS_KEY`` (or ``--https-cert``/``--https-key``) it
also serves HTTPS on ``HTTPS_PORT``; with ``HTTPS_CLIENT_CA`` every HTTPS client
must present a certificate signed by that CA (see ``smsapi.https``).

It listens on ``HTTP_HOST`` (default 127.0.0.1: the demo is open, so it is
reachable from this machine only unless told otherwise) and warns loudly at
start when it listens elsewhere in an unsafe configuration
(``smsapi.startup_checks``).

Supervised (``messaging.supervision``): when the worker, the webhook sender, the
simulator's start or an HTTP(S) listener dies, the death is logged with its
traceback, ``/readyz`` of this process answers 503, the others stop as on
SIGTERM and the command exits with ``EXIT_TASK_DIED`` (70). SIGINT and SIGTERM
exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import daphne.server  # noqa: F401 - installs the asyncio reactor before Twisted is used
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from twisted.internet import defer, reactor
from twisted.internet.error import ReactorNotRunning

from messaging.supervision import LongLivedTask, Supervisor
from messaging.webhooks import WebhookSender
from smpp_gateway.management.commands.smpp_worker import hold_sqlite_worker_lock, worker_task
from smpp_gateway.management.commands.webhook_sender import sender_task
from smpp_gateway.worker import SMPPWorker, WorkerConfig
from smsapi.https import listen_https, tls_options
from smsapi.startup_checks import warn_if_unsafe

logger = logging.getLogger("smpp_gateway.serve")


def stop_reactor() -> None:
    """Stop the reactor unless it is already stopping (or never ran)."""
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


class SupervisedServer(Server):
    """Daphne's server, whose listen failures count as deaths of the process."""

    def __init__(self, *args, supervisor: Supervisor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.supervisor = supervisor

    def listen_error(self, failure) -> None:
        self.supervisor.fail("http-listener", failure.value)
        super().listen_error(failure)  # logs and stops the reactor


class Command(BaseCommand):
    help = "Run the HTTP/WebSocket server and the SMPP worker in one process."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=settings.HTTP_HOST,
            help="address to listen on (HTTP_HOST, default 127.0.0.1; 0.0.0.0 for every one)",
        )
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

        supervisor = Supervisor("serve", on_failure=stop_reactor)
        specs = []
        if simulator is not None:
            specs.append(LongLivedTask(name="smsc-simulator", run=simulator.start, may_end=True))
            supervisor.add_cleanup(simulator.stop)  # after the worker has unbound
        if worker is not None:
            specs.append(worker_task(worker))
        if sender is not None:
            specs.append(sender_task(sender))

        def start():
            supervisor.start_all(specs)
            if https is not None:
                listen_https(server, options["https_port"], options["host"], https)

        def shut_down():
            if supervisor.failure is None:
                supervisor.request_stop()  # SIGINT, SIGTERM: a clean stop
            return defer.Deferred.fromFuture(asyncio.ensure_future(supervisor.stop_all()))

        reactor.callWhenRunning(start)
        reactor.addSystemEventTrigger("before", "shutdown", shut_down)
        endpoints = build_endpoint_description_strings(host=options["host"], port=options["port"])
        server = SupervisedServer(
            application=get_default_application(),
            endpoints=endpoints,
            signal_handlers=True,
            verbosity=0,
            supervisor=supervisor,
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
        warn_if_unsafe([options["host"]])
        try:
            server.run()
        finally:
            if lock is not None:
                lock.close()
        if supervisor.exit_code:
            raise CommandError(
                f"stopped because {supervisor.failure} (see the log above)",
                returncode=supervisor.exit_code,
            )
