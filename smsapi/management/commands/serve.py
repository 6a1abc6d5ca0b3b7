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

Daphne's access log (one line per request, ``api_key`` redacted) goes to standard
output, as under ``daphne`` itself; ``--no-access-log`` turns it off. A port already
taken fails at start with one line naming the port and the setting to change
(``HTTP_PORT``, ``SIMULATOR_PORT``), and "listening" is printed only once it is true.

Supervised (``messaging.supervision``): when the worker, the webhook sender, the
simulator's start or an HTTP(S) listener dies, the death is logged with its
traceback, ``/readyz`` of this process answers 503, the others stop as on
SIGTERM and the command exits with ``EXIT_TASK_DIED`` (70). SIGINT and SIGTERM
exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import daphne.server  # noqa: F401 - installs the asyncio reactor before Twisted is used
from daphne.access import AccessLogGenerator
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.ssl import CertificateOptions

from messaging.supervision import LongLivedTask, Supervisor
from messaging.webhooks.delivery import WebhookSender
from smpp_gateway.worker import WorkerConfig
from smpp_gateway.worker.fleet import WorkerFleet
from smsapi.daphne_requests import redact_access_log
from smsapi.https import listen_https, tls_options
from smsapi.management.commands.smpp_worker import hold_sqlite_worker_lock, worker_task
from smsapi.management.commands.webhook_sender import sender_task
from smsapi.startup_checks import warn_if_unsafe

if TYPE_CHECKING:
    from smpp_gateway.simulator import SMSCSimulator

logger = logging.getLogger("smsapi.serve")


def stop_reactor() -> None:
    """Stop the reactor unless it is already stopping (or never ran)."""
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


class PortInUse(OSError):
    """A port this process must listen on is taken; the message says what to set."""


def port_in_use(what: str, host: str, port: int, variable: str) -> PortInUse:
    """The one line a newcomer needs when ``port`` is taken: which port, what to set."""
    error = PortInUse(
        f"{what} port {port} on {host} is already in use (another copy running?): stop what "
        f"holds it, or set {variable} to a free port (e.g. make run {variable}={port + 1})"
    )
    error.errno = errno.EADDRINUSE
    return error


def is_address_in_use(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it wraps) is "address already in use"."""
    if isinstance(error, CannotListenError):
        error = error.socketError
    return isinstance(error, OSError) and error.errno == errno.EADDRINUSE


class SupervisedServer(Server):
    """Daphne's server, whose listen failures count as deaths of the process."""

    def __init__(self, *args, supervisor: Supervisor, port_variable: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.supervisor = supervisor
        self.port_variable = port_variable

    def listen_success(self, port) -> None:
        super().listen_success(port)
        host = port.getHost()
        # Said once it is true: a taken port never prints "listening".
        sys.stdout.write(f"SMS API listening on http://{host.host}:{host.port}/\n")
        sys.stdout.flush()

    def listen_error(self, failure) -> None:
        error = failure.value
        if is_address_in_use(error):
            clear = port_in_use("HTTP", error.interface or "*", error.port, self.port_variable)
            clear.__cause__ = error
            error = clear
        self.supervisor.fail("http-listener", error)
        super().listen_error(failure)  # logs and stops the reactor


def simulator_start(simulator, host: str, port: int):
    """The simulator's start, its "address in use" said with the setting to change."""

    async def start() -> None:
        try:
            await simulator.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise port_in_use("SMSC simulator", host, port, "SIMULATOR_PORT") from exc

    return start


class FlushingStream:
    """Standard output, flushed after each access-log line (a pipe buffers otherwise)."""

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


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
            "--no-access-log",
            action="store_true",
            help="do not write daphne's access log (one line per request) to standard output",
        )
        parser.add_argument(
            "--simulator",
            type=int,
            metavar="PORT",
            help="also run the bundled SMSC simulator on PORT and bind to it",
        )

    def handle(self, *args, **options):
        """Build what runs (simulator, worker, webhook sender, HTTP(S) server), in the
        order each needs the one before, then run the reactor until a stop."""
        https = https_options(options)
        simulator = embedded_simulator(options["simulator"])
        lock = None
        if not options["no_worker"] and connection.vendor == "sqlite":
            lock = hold_sqlite_worker_lock()  # before the worker exists: one per database
        worker = None if options["no_worker"] else embedded_worker(options["simulator"])
        sender = None if options["no_webhooks"] else WebhookSender()

        supervisor = Supervisor("serve", on_failure=stop_reactor)
        tasks = long_lived_tasks(supervisor, simulator, options["simulator"], worker, sender)
        server = http_server(options, supervisor)
        start_with_reactor(supervisor, tasks, server, https, options)
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


# --- the steps of ``serve``, in the order ``handle`` takes them ---------------------------


def https_options(options: dict) -> CertificateOptions | None:
    """The TLS options of the HTTPS listener, or None without HTTPS; refuses a half set-up."""
    if options["https_cert"] or options["https_key"]:
        if not (options["https_cert"] and options["https_key"]):
            raise CommandError("HTTPS needs both a certificate and its key")
        return tls_options(options["https_cert"], options["https_key"], options["https_client_ca"])
    if options["https_client_ca"] or options["no_http"]:
        raise CommandError("HTTPS_CLIENT_CA and --no-http need HTTPS_CERT and HTTPS_KEY")
    return None


def embedded_simulator(port: int | None) -> SMSCSimulator | None:
    """The bundled SMSC simulator on ``port`` (``--simulator``), or None; the
    dashboard's "simulate an incoming message" is wired to it."""
    if not port:
        return None
    from messaging.api import demo_simulator
    from smpp_gateway.simulator import SimulatorConfig, SMSCSimulator

    simulator = SMSCSimulator(
        SimulatorConfig(
            host="127.0.0.1",
            port=port,
            system_id=settings.SMPP_USER,
            password=settings.SMPP_PASSWD,
            # Receipts owed at Ctrl-C are sent on the next bind, as a real SMSC's are.
            owed_file=str(settings.DATA_DIR / "simulator-owed.json"),
        )
    )
    demo_simulator.register(simulator)
    return simulator


def embedded_worker(simulator_port: int | None) -> WorkerFleet:
    """The SMPP workers; the default connector binds to the embedded simulator
    when there is one."""
    overrides = {}
    if simulator_port:
        base = WorkerConfig.from_settings()
        overrides["session"] = replace(base.session, host="127.0.0.1", port=simulator_port)
    return WorkerFleet(WorkerConfig.from_settings(**overrides))


def long_lived_tasks(
    supervisor: Supervisor,
    simulator: SMSCSimulator | None,
    simulator_port: int | None,
    worker: WorkerFleet | None,
    sender: WebhookSender | None,
) -> list[LongLivedTask]:
    """What the supervisor starts, in order: the simulator first (the worker binds
    to it), stopped last (after the worker has unbound)."""
    tasks = []
    if simulator is not None:
        tasks.append(
            LongLivedTask(
                name="smsc-simulator",
                run=simulator_start(simulator, "127.0.0.1", simulator_port),
                may_end=True,
            )
        )
        supervisor.add_cleanup(simulator.stop)
    if worker is not None:
        tasks.append(worker_task(worker))
    if sender is not None:
        tasks.append(sender_task(sender))
    return tasks


def access_logger(enabled: bool) -> AccessLogGenerator | None:
    """Daphne's access log, as ``daphne`` writes it by default; only with the
    api_key redaction in place (smsapi.daphne_requests), never without it."""
    if not enabled:
        return None
    if redact_access_log():
        return AccessLogGenerator(FlushingStream())
    logger.warning("access log off: its api_key redaction cannot apply to this daphne")
    return None


def http_server(options: dict, supervisor: Supervisor) -> SupervisedServer:
    """Daphne serving the ASGI application on the HTTP endpoint (none with ``--no-http``)."""
    from channels.routing import get_default_application

    endpoints = build_endpoint_description_strings(host=options["host"], port=options["port"])
    server = SupervisedServer(
        application=get_default_application(),
        endpoints=endpoints,
        signal_handlers=True,
        verbosity=0,
        supervisor=supervisor,
        port_variable="HTTP_PORT",
        action_logger=access_logger(not options["no_access_log"]),
    )
    if options["no_http"]:
        server.endpoints = []  # daphne wants one at construction; HTTPS is ours
    return server


def start_with_reactor(
    supervisor: Supervisor,
    tasks: list[LongLivedTask],
    server: SupervisedServer,
    https: CertificateOptions | None,
    options: dict,
) -> None:
    """Once the reactor runs: the tasks, then the HTTPS listener. At its shutdown
    (SIGINT, SIGTERM, a death): every task stopped, the worker first."""

    def start() -> None:
        supervisor.start_all(tasks)
        if https is not None:
            listen_https(server, options["https_port"], options["host"], https)

    def shut_down():
        if supervisor.failure is None:
            supervisor.request_stop()  # SIGINT, SIGTERM: a clean stop
        return defer.Deferred.fromFuture(asyncio.ensure_future(supervisor.stop_all()))

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
