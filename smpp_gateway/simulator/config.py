"""Configuration of the SMSC simulator, and its command-line flags.

Every field of ``SimulatorConfig`` is also a flag of ``manage.py smsc_simulator``
(``receipt_delay`` -> ``--receipt-delay``; booleans get ``--x``/``--no-x``), so a
behaviour a test can switch on in-process can also be switched on for the
simulator running as a separate process, and changed at run time through
``SMSCSimulator.set_config`` or ``POST /config`` on the control port.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from smpp.command_status import ESME_RTHROTTLED
from smpp_gateway.simulator.id_styles import ID_STYLES

# message_state (SMPP 3.4 5.2.28) of each receipt stat the simulator can produce.
STATE_BY_STAT: dict[str, int] = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}


def setting(default: Any, help_text: str) -> Any:
    """A config field whose help text the command line shows."""
    return field(default=default, metadata={"help": help_text})


def clock_message_id() -> int:
    """A first message id that grows with the clock.

    A gateway keeps the SMSC's ids in its database: if every simulator run
    started again at 1, a receipt of today would match a message of yesterday.
    100 ids per millisecond can be used before two runs could overlap.
    """
    return int(time.time() * 1000) * 100


@dataclass
class SimulatorConfig:
    """Everything the simulator can be told; defaults behave like a fast, healthy SMSC."""

    # Listening sockets.
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(2775, "SMPP port; 0 = an ephemeral port (printed, and in .port)")
    control_port: int | None = setting(
        None, "HTTP/JSON control port (see simulator.control); 0 = ephemeral; off if not given"
    )
    tls_cert: str = setting("", "PEM certificate (chain): serve SMPP over TLS (with --tls-key)")
    tls_key: str = setting("", "PEM private key of --tls-cert")

    # Accounts and binds.
    system_id: str = setting("smsapi", "the system_id clients must bind with")
    password: str = setting("secret", "the password clients must bind with")
    smsc_system_id: str = setting("SMSCSIM", "our own name, sent in bind_resp")
    max_binds_per_user: int = setting(
        0, "binds allowed at once per system_id, beyond: ESME_RALYBND; 0 = unlimited"
    )
    enquire_link_interval: float = setting(
        0.0, "send enquire_link every N s (link dropped after 3 unanswered); 0 = never"
    )

    # Message ids.
    first_message_id: int = field(
        default_factory=clock_message_id,
        metadata={"help": "first message id (default: from the clock, unique across runs)"},
    )
    hex_ids: bool = setting(
        False, "ids in hex in submit_sm_resp, in decimal in the receipt text (SMSC quirk)"
    )
    id_style: str = setting(
        "",
        "ids as real SMSCs give them: lower-hex, upper-hex, decimal, zero-padded-response, "
        "zero-padded-receipt, alphanumeric (M1QK2V), uuid (see simulator.id_styles); "
        "'' = decimal, or --hex-ids",
    )

    # Outcome by destination (see the package docstring).
    reject_dst_prefix: str = setting("999", "destinations refused with ESME_RINVDSTADR")
    undeliv_dst_prefix: str = setting("998", "destinations whose receipt says UNDELIV")
    expire_dst_prefix: str = setting("997", "destinations whose receipt says EXPIRED")
    receipt_stat: str = setting("", "stat of every receipt (e.g. UNDELIV), whatever the dst")

    # Receipts and other deliver_sm (MO) to the client.
    receipt_delay: float = setting(0.2, "seconds from submit_sm_resp to the receipt")
    receipt_tlvs: bool = setting(
        True, "receipts carry receipted_message_id, message_state, network_error_code"
    )
    receipt_text: bool = setting(True, "receipts carry the Appendix B text in short_message")
    deliver_timeout: float = setting(
        10.0, "seconds to wait for deliver_sm_resp before sending the deliver_sm again"
    )
    redeliver_delay: float = setting(
        1.0, "seconds before resending a refused or unanswered deliver_sm"
    )
    deliver_window: int = setting(100, "unanswered deliver_sm per session; 0 = unlimited")

    # Fault injection.
    error_rate: float = setting(0.0, "share (0-1) of submits answered with --error-status")
    error_status: int = setting(
        ESME_RTHROTTLED, "status for --error-rate: 0x58 (throttled), 0x14 (queue full), 0x08"
    )
    max_rate: float = setting(0.0, "submits/s per session (token bucket), beyond: 0x58; 0 = off")
    max_window: int = setting(0, "unanswered submits per session, beyond: 0x58; 0 = off")
    response_delay: float = setting(0.0, "seconds before each submit_sm_resp")
    drop_response_rate: float = setting(
        0.0, "share of accepted submits never answered (receipt still sent)"
    )
    disconnect_every_pdus: int = setting(0, "drop the connection after N PDUs of a session")
    disconnect_every_seconds: float = setting(0.0, "drop each connection N s after its bind")
    receipt_before_response: bool = setting(False, "send the receipt before the submit_sm_resp")
    malformed_rate: float = setting(
        0.0, "share of submits whose resp is preceded by a PDU of unknown command_id 0xFF"
    )

    # A hostile SMSC (issue 18): what a gateway must survive without losing anything.
    message_id_length: int = setting(
        0,
        "message ids this many characters long (SMPP allows 64; a fixed prefix, then the "
        "number); 0 = the plain number",
    )
    empty_id_rate: float = setting(
        0.0, "share of accepted submits answered status 0 with an empty message_id"
    )
    receipt_nul: bool = setting(False, "receipt texts carry NUL octets")
    truncated_deliver_rate: float = setting(
        0.0,
        "share of receipts preceded by a deliver_sm whose body is cut short (sm_length or "
        "a TLV running past the end)",
    )
    flood_after_pdus: int = setting(
        0,
        "after N PDUs of a session, stop reading it and flood it with enquire_link until "
        "the client drops the link; 0 = off",
    )
    flood_rate: int = setting(20000, "enquire_link a second while flooding")
    pdus_before_bind_resp: bool = setting(
        False, "answer a bind with an enquire_link and an incoming message first, then bind_resp"
    )
    mo_source_addr_length: int = setting(
        0,
        "incoming messages' source_addr padded with digits to this length (over 20: more "
        "than SMPP allows); 0 = as given",
    )

    # Real SMSCs' habits (issue 20).
    data_sm: bool = setting(
        False, "send receipts and incoming messages as data_sm (text in message_payload)"
    )
    queue_full_for: float = setting(
        0.0,
        "each session answers ESME_RMSGQFUL (0x14) to every submit for N s after its bind "
        "(enquire_link still answered); -1 = for ever; 0 = off",
    )
    bind_close: bool = setting(
        False, "answer every bind by closing the connection (as SMSCs do on bad credentials)"
    )

    # Housekeeping.
    record_limit: int = setting(100_000, "accepted submits kept in memory (oldest dropped)")
    seed: int | None = setting(None, "random seed, for reproducible faults")
    owed_file: str = setting(
        "", "JSON file keeping receipts/MO still owed across a restart (sent on the next bind)"
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` on a setting that cannot work."""
        for name in (
            "error_rate",
            "drop_response_rate",
            "malformed_rate",
            "empty_id_rate",
            "truncated_deliver_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        for name in (
            "receipt_delay",
            "deliver_timeout",
            "redeliver_delay",
            "response_delay",
            "max_rate",
            "disconnect_every_seconds",
            "enquire_link_interval",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in (
            "max_window",
            "disconnect_every_pdus",
            "deliver_window",
            "max_binds_per_user",
            "flood_after_pdus",
            "flood_rate",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.queue_full_for < 0 and self.queue_full_for != -1:
            raise ValueError("queue_full_for must be -1 (for ever), 0 (off) or positive")
        if self.message_id_length and not 20 <= self.message_id_length <= 60000:
            raise ValueError("message_id_length must be 0 or between 20 and 60000")
        if self.mo_source_addr_length and not 1 <= self.mo_source_addr_length <= 1000:
            raise ValueError("mo_source_addr_length must be 0 or between 1 and 1000")
        if self.deliver_timeout == 0:
            raise ValueError("deliver_timeout must be positive")
        if self.record_limit < 1:
            raise ValueError("record_limit must be at least 1")
        if self.receipt_stat and self.receipt_stat.upper() not in STATE_BY_STAT:
            raise ValueError(f"receipt_stat must be one of {sorted(STATE_BY_STAT)}")
        if not (self.receipt_tlvs or self.receipt_text):
            raise ValueError("a receipt needs its text or its TLVs (or both)")
        if not 0 <= self.error_status <= 0xFFFFFFFF:
            raise ValueError("error_status must fit in 32 bits")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.id_style not in ID_STYLES:
            raise ValueError(f"id_style must be one of {', '.join(repr(s) for s in ID_STYLES)}")
        if self.id_style and self.hex_ids:
            raise ValueError("hex_ids is an id style of its own: give id_style or hex_ids")

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A validated copy with ``changes`` applied; unknown names raise ``ValueError``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown simulator settings: {', '.join(sorted(unknown))}")
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def rejects(self, destination: str) -> bool:
        """Whether a submit to ``destination`` is refused (ESME_RINVDSTADR): empty,
        ``rej...`` or ``reject_dst_prefix`` (see the package docstring)."""
        prefix = self.reject_dst_prefix
        return (
            not destination
            or destination.startswith("rej")
            or bool(prefix and destination.startswith(prefix))
        )

    def receipt_stat_for(self, destination: str) -> str:
        """The receipt stat for a destination (see the package docstring)."""
        if self.receipt_stat:
            return self.receipt_stat.upper()
        if destination.startswith("undeliv") or (
            self.undeliv_dst_prefix and destination.startswith(self.undeliv_dst_prefix)
        ):
            return "UNDELIV"
        if destination.startswith("expire") or (
            self.expire_dst_prefix and destination.startswith(self.expire_dst_prefix)
        ):
            return "EXPIRED"
        return "DELIVRD"


# Type of each field as the command line and JSON deliver it.
_FIELD_TYPES: dict[str, type] = {
    f.name: (int if f.name in ("control_port", "first_message_id", "seed") else type(f.default))
    for f in dataclasses.fields(SimulatorConfig)
    if f.default is not dataclasses.MISSING or f.name == "first_message_id"
}


def _coerce(name: str, value: Any) -> Any:
    """JSON and CLI give strings or ints where floats are meant: normalise them."""
    kind = _FIELD_TYPES[name]
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if kind is int:
        return int(value, 0) if isinstance(value, str) else int(value)
    if kind is float:
        return float(value)
    return str(value)


def _parse_int(text: str) -> int:
    """Accepts 88 and 0x58 alike (statuses are written in hex everywhere)."""
    return int(text, 0)


# Flags that read better under another name than the field's.
_FLAG_NAMES: dict[str, tuple[str, ...]] = {
    "system_id": ("--user", "--system-id"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ``SimulatorConfig`` field, defaulting to the field's default."""
    for f in dataclasses.fields(SimulatorConfig):
        flags = _FLAG_NAMES.get(f.name, ("--" + f.name.replace("_", "-"),))
        kind = _FIELD_TYPES[f.name]
        help_text = f.metadata.get("help", "")
        if f.default not in (dataclasses.MISSING, None, ""):
            shown = hex(f.default) if f.name == "error_status" else repr(f.default)
            help_text += f" (default: {shown})"
        if kind is bool:
            parser.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                *flags,
                dest=f.name,
                type=_parse_int if kind is int else kind,
                default=None,
                help=help_text,
            )


def config_from_options(options: dict[str, Any]) -> SimulatorConfig:
    """Build a config from parsed flags; flags left out keep the field defaults."""
    names = {f.name for f in dataclasses.fields(SimulatorConfig)}
    given = {k: v for k, v in options.items() if k in names and v is not None}
    return SimulatorConfig(**given)
