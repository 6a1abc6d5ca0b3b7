"""Several SMSCs in one simulator process (``manage.py smsc_simulator --smscs FILE``).

Gateways that route between providers, fail over and match receipts per SMSC
(issue 24) are tested against more than one SMSC at once: each with its own
port, credentials, behaviour and faults, and its own message ids (which may
collide with another's, as real SMSCs' do). The file is a JSON list of
objects: a ``name`` and any ``SimulatorConfig`` fields, which override the
command line's flags (the flags are every SMSC's defaults)::

    [
      {"name": "eu", "port": 2775, "system_id": "eu-user", "password": "eu-pw"},
      {"name": "us", "port": 2776, "system_id": "us-user", "password": "us-pw",
       "receipt_delay": 1.0, "error_rate": 0.1}
    ]

The SMSCs share the process and its event loop, nothing else: each is an
``SMSCSimulator`` of its own, and ``POST /config`` on its control port changes
that one only.
"""

from __future__ import annotations

import json
import re
from typing import Any

from smpp_gateway.simulator.config import SimulatorConfig
from smpp_gateway.simulator.server import SMSCSimulator

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def read_smsc_set(text: str, defaults: SimulatorConfig) -> dict[str, SimulatorConfig]:
    """Each SMSC's config, by name, from the JSON ``text``; ``ValueError`` (saying
    which entry and why) for anything else than a list of well-formed entries."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError("a non-empty JSON list of SMSCs is expected")
    configs: dict[str, SimulatorConfig] = {}
    for position, entry in enumerate(entries, 1):
        name, config = _entry(position, entry, defaults)
        if name in configs:
            raise ValueError(f"SMSC {position}: the name {name!r} is taken by another")
        configs[name] = config
    _check_ports(configs)
    return configs


def _entry(position: int, entry: Any, defaults: SimulatorConfig) -> tuple[str, SimulatorConfig]:
    if not isinstance(entry, dict):
        raise ValueError(f"SMSC {position}: an object is expected, not {type(entry).__name__}")
    fields = dict(entry)
    name = fields.pop("name", None)
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            f"SMSC {position}: a name is needed (letters, digits, '_', '.', '-'; 64 at most)"
        )
    try:
        return name, defaults.replace(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"SMSC {name!r}: {exc}") from None


def _check_ports(configs: dict[str, SimulatorConfig]) -> None:
    """Two SMSCs on one fixed port (0, ephemeral, may repeat) cannot both listen."""
    taken: dict[tuple[str, int], str] = {}
    for name, config in configs.items():
        for port in (config.port, config.control_port):
            if not port:
                continue
            other = taken.setdefault((config.host, port), name)
            if other != name:
                raise ValueError(f"SMSCs {other!r} and {name!r} both want port {port}")


class SimulatorSet:
    """The SMSCs of one ``read_smsc_set``, started and stopped together."""

    def __init__(self, configs: dict[str, SimulatorConfig]) -> None:
        self.simulators = {name: SMSCSimulator(config) for name, config in configs.items()}

    async def start(self) -> None:
        """Start every SMSC; if one cannot listen, those already started stop again."""
        started = []
        try:
            for simulator in self.simulators.values():
                await simulator.start()
                started.append(simulator)
        except BaseException:
            for simulator in started:
                await simulator.stop()
            raise

    async def stop(self) -> None:
        for simulator in self.simulators.values():
            await simulator.stop()
