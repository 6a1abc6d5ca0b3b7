"""The worker's slow loops while bound: store upkeep and /v1/query's questions.

``maintain`` runs once a ``maintenance_interval``: the send rate's tick, the
refusal watch (stall), expiry, abandoned leases, stale reassemblies and the
link heartbeat. ``answer_queries`` serves /v1/query (query_sm) over the bind.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer

from messaging import store
from messaging.notify import publish, query_channel
from messaging.store import Notifications
from smpp.pdu import as_text
from smpp.session import LinkError, SMPPSession

if TYPE_CHECKING:
    from messaging.orm_thread import DatabaseThread
    from smpp_gateway.worker.config import WorkerConfig
    from smpp_gateway.worker.link import Link

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker


async def maintain(config: WorkerConfig, db: DatabaseThread, link: Link) -> None:
    """Expiry, abandoned leases, stale reassemblies and the link heartbeat, for ever."""
    loop = asyncio.get_running_loop()
    expired_at = loop.time()
    while True:
        await asyncio.sleep(config.maintenance_interval)
        now = loop.time()
        link.rate.tick()
        try:
            await link.watch_refusals()
            notes = Notifications()
            if now - expired_at >= config.expire_interval:
                # Claims never send an overdue part: marking it expired can wait a
                # little (it reads every message with a validity).
                expired_at = now
                notes.merge(await db.run(store.expire_overdue))
            notes.merge(
                await db.run(
                    store.assemble_stale_fragments,
                    config.reassembly_timeout,
                    config.default_alphabet,
                )
            )
            await db.run(store.requeue_abandoned)
            await link.heartbeat()
            await publish(notes)
        except Exception:
            logger.exception("maintenance failed; trying again")


async def answer_queries(session: SMPPSession, connector: str = "") -> None:
    """Serve /v1/query's questions about ``connector``'s messages to its SMSC
    (query_sm) while bound."""
    layer = get_channel_layer()
    if layer is None:
        return
    channel = query_channel(connector)
    while True:
        try:
            request = await layer.receive(channel)
        except Exception:  # a broken channel layer (Redis down): not a dead worker
            logger.warning("could not read query requests; trying again", exc_info=True)
            await asyncio.sleep(1.0)
            continue
        reply = await _ask(session, request)
        try:
            await layer.send(request.get("reply_channel", ""), reply)
        except Exception:  # the asker has gone; nothing is lost
            logger.debug("query answer not delivered", exc_info=True)


async def _ask(session: SMPPSession, request: dict) -> dict[str, Any]:
    """The SMSC's answer to one question, or why there is none."""
    reply: dict[str, Any] = {"type": "query.result"}
    try:
        pdu = await session.query(
            request["message_id"],
            request.get("src", ""),
            request.get("src_ton", 0),
            request.get("src_npi", 0),
        )
    except (TimeoutError, LinkError) as exc:
        reply["error"] = f"no answer from the SMSC: {exc or type(exc).__name__}"
    except Exception as exc:  # one question (an id query_sm cannot carry): its own
        logger.warning("query_sm not sent: %s", exc)
        reply["error"] = f"cannot ask the SMSC: {exc}"
    else:
        reply.update(
            command_status=pdu.status,
            message_state=pdu.message_state,
            final_date=as_text(pdu.final_date),
            error_code=pdu.error_code,
        )
    return reply
