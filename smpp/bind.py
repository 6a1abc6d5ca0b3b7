"""Opening a link to an SMSC: the TCP (or TLS) connection and the answer to our bind.

``SMPPSession.open`` sends the bind (transceiver, transmitter or receiver); what
comes back before its response is read here, since an SMSC may speak first (an
enquire_link, a deliver_sm it has waiting), and many SMSCs close the
connection instead of answering a bind they refuse.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from smpp.command_status import ESME_RBINDFAIL, ESME_RINVBNDSTS, ESME_RX_T_APPN, status_name
from smpp.constants import (
    BIND_RECEIVER_RESP,
    BIND_TRANSCEIVER_RESP,
    BIND_TRANSMITTER_RESP,
    DATA_SM,
    DELIVER_SM,
    ENQUIRE_LINK,
    GENERIC_NACK,
    RESPONSE_BIT,
    UNBIND,
)
from smpp.framing import PDUFormatError, peek_header, read_pdu
from smpp.pdu import encode_pdu
from smpp.pdu_fast import encode_data_sm_resp, encode_deliver_sm_resp

if TYPE_CHECKING:
    from smpp.session_config import SessionConfig

logger = logging.getLogger("smpp.session")

# PDUs the SMSC may send before its bind response (answered or ignored); beyond, the
# link is given up (a peer talking that much without binding us is not an SMSC).
MAX_PDUS_BEFORE_BIND_RESP = 100
# SessionConfig.bind_kind -> the response its bind_<kind> gets.
BIND_RESPONSES = {
    "transceiver": BIND_TRANSCEIVER_RESP,
    "transmitter": BIND_TRANSMITTER_RESP,
    "receiver": BIND_RECEIVER_RESP,
}
# What an SMSC that closes the connection instead of answering a bind usually means.
BIND_UNANSWERED_CAUSES = (
    "the usual causes: a wrong SMPP_PASSWD, SMPP_USER or SMPP_SYSTEM_TYPE, a source "
    "address or an IP address the SMSC does not allow, or TLS on one side only (SMPP_TLS)"
)


class LinkError(Exception):
    """The link could not be opened or was lost."""


class BindUnanswered(LinkError):
    """The SMSC closed the connection (or said nothing) instead of answering the bind:
    many do so on bad credentials rather than answer ESME_RBINDFAIL."""


class BindRefused(LinkError):
    def __init__(self, status: int):
        super().__init__(f"bind failed: {status_name(status)} (0x{status:08X})")
        self.status = status


async def connect(cfg: SessionConfig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The TCP (or TLS) connection, with Nagle off; raises ``LinkError``.

    A CA file that cannot be read is a ``LinkError`` too: the connector's setting is
    wrong, and its bind retries with backoff like any link that fails (others go on).
    """
    try:
        ssl_context = _ssl_context(cfg) if cfg.tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                cfg.host,
                cfg.port,
                ssl=ssl_context,
                server_hostname=cfg.host if cfg.tls else None,
            ),
            cfg.connect_timeout,
        )
    except (TimeoutError, OSError, ValueError) as exc:  # ValueError: a host it cannot look up
        raise LinkError(f"connection failed: {exc or type(exc).__name__}") from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def bind_unanswered(exc: BaseException, response_timeout: float) -> BindUnanswered:
    """What to say when the bind got no answer, by how it failed to come."""
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
        what = "the SMSC closed the connection without answering the bind"
    elif isinstance(exc, TimeoutError):
        what = f"no answer to the bind in {response_timeout:g} s"
    else:
        what = f"no answer to the bind ({exc or type(exc).__name__})"
    return BindUnanswered(f"bind failed: {what}; {BIND_UNANSWERED_CAUSES}")


# Exceptions that mean "no answer to the bind" (``bind_unanswered`` says which).
NO_BIND_ANSWER = (TimeoutError, OSError, asyncio.IncompleteReadError, PDUFormatError)


async def read_bind_response(
    reader: asyncio.StreamReader,
    write: Callable[[bytes], None],
    sequence: int,
    response_id: int = BIND_TRANSCEIVER_RESP,
) -> int:
    """Read until the answer to our bind (sequence ``sequence``); its status.

    An SMSC may speak first: an enquire_link is answered, a deliver_sm is
    answered "try again later" (ESME_RX_T_APPN: we cannot take it before we
    are bound, the SMSC keeps it), another request gets generic_nack
    ESME_RINVBNDSTS, and an unrelated response is ignored. None of them is a
    bind refusal.
    """
    for _ in range(MAX_PDUS_BEFORE_BIND_RESP):
        data = await read_pdu(reader)
        _, command_id, status, seq = peek_header(data)
        if command_id == response_id or (command_id == GENERIC_NACK and seq == sequence):
            # A refusal without a status says nothing: take it as bad credentials.
            if status or command_id == response_id:
                return status
            return ESME_RBINDFAIL
        if command_id & RESPONSE_BIT:
            logger.info("ignoring PDU 0x%08X before the bind response", command_id)
        elif command_id == ENQUIRE_LINK:
            write(encode_pdu("enquire_link_resp", seq))
        elif command_id == DELIVER_SM:
            write(encode_deliver_sm_resp(seq, ESME_RX_T_APPN))
        elif command_id == DATA_SM:
            write(encode_data_sm_resp(seq, ESME_RX_T_APPN))
        elif command_id == UNBIND:
            write(encode_pdu("unbind_resp", seq))
            raise LinkError("bind failed: the SMSC unbound before answering the bind")
        else:
            write(encode_pdu("generic_nack", seq, status=ESME_RINVBNDSTS))
    raise LinkError(
        f"bind failed: {MAX_PDUS_BEFORE_BIND_RESP} PDUs from the SMSC and no bind response"
    )


def _ssl_context(cfg: SessionConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cfg.tls_ca or None)
    if cfg.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
