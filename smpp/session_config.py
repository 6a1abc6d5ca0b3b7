"""How a client session reaches and paces its SMSC, and what it calls back with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    bind_kind: str = "transceiver"  # or "transmitter" (submits only), "receiver" (delivers only)
    tls: bool = False
    tls_insecure: bool = False
    tls_ca: str = ""
    window: int = 100
    response_timeout: float = 10.0
    enquire_link_interval: float = 10.0
    link_timeout: float = 30.0
    connect_timeout: float = 10.0
    # A peer that stops reading: once this many octets wait in our write buffer
    # (above what the kernel holds), the link is dropped.
    write_buffer_limit: int = 1024 * 1024
    # Requests the SMSC may send a second beyond deliver_sm (enquire_link, unknown
    # commands) before the link is reset: each costs an answer (a flood).
    peer_request_rate: float = 200.0
    # deliver_sm handed to the owner and not yet answered: beyond, reading stops
    # until answers go out (the SMSC's own window should be far lower).
    max_unanswered_delivers: int = 5000


# on_submit_response(token, status, message_id, sequence); status None: no answer in time
SubmitCallback = Callable[[Any, int | None, str, int], None]
# on_deliver(pdu, sequence): the owner must call respond_deliver(sequence, status) later
DeliverCallback = Callable[[Any, int], None]
