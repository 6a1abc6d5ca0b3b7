"""``manage.py smsc_simulator``: run the SMSC simulator until SIGINT/SIGTERM.

Every ``SimulatorConfig`` field is a flag (``--receipt-delay 0.5``,
``--hex-ids``, ``--error-status 0x14`` ...; ``--user`` is the system_id). The
simulator needs no database, so the command runs no system checks and never
touches the ORM: it can start before migrations, or with no database at all.
Once listening it prints one line to stdout::

    SMSC simulator listening on 127.0.0.1:2775 control=8025

so that a script that asked for port 0 can read the real ports.

``--smscs FILE`` runs several SMSCs at once (``simulator.smsc_set``), the flags
being every SMSC's defaults, and prints one such line per SMSC, named::

    SMSC simulator eu listening on 127.0.0.1:2775 control=8025
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from smpp_gateway.simulator.config import add_config_arguments, config_from_options
from smpp_gateway.simulator.event_loop import new_event_loop
from smpp_gateway.simulator.smsc_set import SimulatorSet, read_smsc_set


class Command(BaseCommand):
    help = "Run the SMPP SMSC simulator (development, tests, benchmarks)."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: Any) -> None:
        add_config_arguments(parser)
        parser.add_argument(
            "--smscs",
            metavar="FILE",
            help="run several SMSCs: a JSON list of {name, settings...} (docs/simulator.md)",
        )
        parser.add_argument(
            "--log-level",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="logging level of the simulator (default: INFO)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(
            level=options["log_level"],
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        logging.getLogger("smpp_gateway.simulator").setLevel(options["log_level"])
        try:
            config = config_from_options(options)
            smscs = self._smsc_set(options["smscs"], config) if options["smscs"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        simulators = SimulatorSet(smscs) if smscs else SimulatorSet({"": config})
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self._serve(simulators))

    @staticmethod
    def _smsc_set(path: str, defaults: Any) -> dict[str, Any]:
        try:
            text = open(path, encoding="utf-8").read()  # noqa: SIM115 - read at once
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        return read_smsc_set(text, defaults)

    async def _serve(self, simulators: SimulatorSet) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await simulators.start()
        except OSError as exc:
            raise CommandError(f"cannot listen: {exc}") from exc
        for name, simulator in simulators.simulators.items():
            control = simulator.control_port
            self.stdout.write(
                "SMSC simulator "
                + (f"{name} " if name else "")
                + f"listening on {simulator.config.host}:{simulator.port}"
                + (f" control={control}" if control is not None else "")
            )
        self.stdout.flush()
        await stop.wait()
        await simulators.stop()
