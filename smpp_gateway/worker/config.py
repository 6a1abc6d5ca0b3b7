"""What a worker is told: the session it binds and the pace it keeps (``WorkerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from messaging.connectors import ConnectorSpec, bind_password
from smpp.session import SessionConfig
from smpp.smsc_ids import IdStyle


@dataclass(frozen=True)
class WorkerConfig:
    session: SessionConfig
    # The SMSC connector this worker sends through: it claims that connector's messages
    # and matches receipts among the parts its SMSC took. "": the default connector
    # (the SMPP_* settings); others are stored (messaging.connectors).
    connector: str = ""
    bind_index: int = 0  # which of the connector's binds (0-based)
    # submit_sm fields the connector sets whatever the message says (its TON/NPI).
    submit_overrides: tuple[tuple[str, int], ...] = ()
    # How its SMSC writes message ids in responses and receipts (smpp.smsc_ids.IdStyle).
    smsc_id_style: str = IdStyle.AUTO
    # Why this bind cannot work as configured (a password variable that is not set):
    # reported as its link's failure and retried slowly, never raised (others go on).
    unusable: str = ""
    reconnect_delays: tuple[float, ...] = (1, 2, 5, 10, 20, 30)
    claim_batch: int = 500  # most parts claimed at once, and kept ready ahead of the window
    poll_interval: float = 0.5
    flush_interval: float = 0.002
    flush_batch: int = 2000  # most results written in one transaction
    # How long an accepted submit's result may wait for its receipt, so that both
    # are written together (one update of the part and message instead of two).
    receipt_wait: float = 0.1
    # Sent but not yet written (results held or pending), in windows: beyond, wait.
    backlog_windows: int = 3
    receipt_wait_max: int = 50_000  # results held at most (memory), beyond: written at once
    maintenance_interval: float = 1.0
    expire_interval: float = 5.0
    default_alphabet: str = "gsm7"
    reassembly_timeout: float = 60.0
    lease_seconds: float = 60.0
    max_rate: float | None = None
    max_attempts: int = 10
    # A session that refuses every submit (0x14, 0x58, 0x08, no answer...) for this
    # long is reported stalled (not ready) and rebound; 0: never.
    stall_rebind_after: float = 60.0
    refusal_log_interval: float = 10.0  # seconds between two summaries of refusals, at least

    @classmethod
    def from_settings(cls, **overrides: Any) -> WorkerConfig:
        """The worker the settings describe; ``overrides`` replace single fields."""
        host, _, port = (settings.SMPP_ADDR or "localhost:2775").rpartition(":")
        session = SessionConfig(
            host=host or "localhost",
            port=int(port),
            system_id=settings.SMPP_USER,
            password=settings.SMPP_PASSWD,
            system_type=settings.SMPP_SYSTEM_TYPE,
            tls=settings.SMPP_TLS,
            tls_insecure=settings.SMPP_TLS_INSECURE,
            tls_ca=settings.SMPP_TLS_CA,
            window=settings.SMPP_WINDOW,
            response_timeout=settings.SMPP_RESPONSE_TIMEOUT,
            enquire_link_interval=settings.SMPP_ENQUIRE_LINK_INTERVAL,
            link_timeout=settings.SMPP_LINK_TIMEOUT,
            write_buffer_limit=settings.SMPP_WRITE_BUFFER_LIMIT,
            peer_request_rate=settings.SMPP_PEER_REQUEST_RATE,
            max_unanswered_delivers=settings.SMPP_MAX_UNANSWERED_DELIVERS,
        )
        values = {
            "session": session,
            "reconnect_delays": tuple(settings.SMPP_RECONNECT_DELAYS),
            "default_alphabet": settings.SMPP_DEFAULT_ALPHABET,
            "reassembly_timeout": settings.SMS_INCOMING_REASSEMBLY_TIMEOUT,
            "lease_seconds": max(settings.SMPP_LEASE_SECONDS, settings.SMPP_RESPONSE_TIMEOUT * 2),
            "max_rate": settings.SMPP_MAX_RATE or None,
            "max_attempts": settings.SMPP_MAX_ATTEMPTS,
            "stall_rebind_after": settings.SMPP_STALL_REBIND_AFTER,
            "smsc_id_style": _id_style(settings.SMPP_SMSC_ID_STYLE),
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_connector(cls, spec: ConnectorSpec, bind_index: int = 0) -> WorkerConfig:
        """The worker of one bind of a stored connector: the connector's own address,
        credentials and pace, the settings' for the rest (retries, leases...)."""
        base = cls.from_settings()
        password, unusable = bind_password(spec)
        session = replace(
            base.session,
            host=spec.host,
            port=spec.port,
            system_id=spec.system_id,
            password=password,
            system_type=spec.system_type,
            tls=spec.tls,
            tls_insecure=spec.tls_insecure,
            tls_ca=spec.tls_ca,
            window=spec.window,
            response_timeout=spec.response_timeout,
            enquire_link_interval=spec.enquire_link_interval,
            link_timeout=spec.link_timeout,
        )
        overrides = tuple(
            (field, value)
            for field, value in (
                ("source_addr_ton", spec.source_ton),
                ("source_addr_npi", spec.source_npi),
                ("dest_addr_ton", spec.dest_ton),
                ("dest_addr_npi", spec.dest_npi),
            )
            if value is not None
        )
        return replace(
            base,
            session=session,
            connector=spec.name,
            bind_index=bind_index,
            submit_overrides=overrides,
            smsc_id_style=_id_style(spec.smsc_id_style),
            unusable=unusable,
            default_alphabet=spec.default_alphabet or base.default_alphabet,
            max_rate=spec.max_rate or None,
            lease_seconds=max(base.lease_seconds, spec.response_timeout * 2),
        )


def _id_style(value: str) -> IdStyle:
    try:
        return IdStyle(value)
    except ValueError:
        raise ValueError(
            f"SMSC id style {value!r} is not one of {', '.join(s.value for s in IdStyle)}"
        ) from None
