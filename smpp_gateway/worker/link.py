"""The worker's bind to the SMSC: binding, backing off, health, stall (``Link``).

The link holds the session of the moment (``session``; None between binds),
records its state for /v1/status and /metrics (``LinkStatus``, the ``link``
group), and rebinds a session that refuses every submit for too long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer
from django.utils import timezone

from messaging.event_payloads import link_payload
from messaging.health import BOUND, STALLED, LinkHealth
from messaging.models import LinkStatus
from messaging.notify import BELLS
from smpp.command_status import BIND_REFUSED, ESME_RMSGQFUL, ESME_RTHROTTLED, status_name
from smpp.flow import AdaptiveRate, RefusalSummary, SubmitRefusals
from smpp.session import BindRefused, BindUnanswered, LinkError, SMPPSession

if TYPE_CHECKING:
    from messaging.orm_thread import DatabaseThread
    from smpp_gateway.worker.config import WorkerConfig

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker


class Link:
    """One bind at a time, with capped backoff between attempts."""

    def __init__(
        self,
        config: WorkerConfig,
        worker_id: str,
        db: DatabaseThread,
        rate: AdaptiveRate,
        refusals: SubmitRefusals,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.db = db
        self.rate = rate
        self.refusals = refusals
        self.session_factory: Callable[..., SMPPSession] = SMPPSession  # tests: a fake
        self.session: SMPPSession | None = None
        self.state = "disconnected"
        self._failures = 0  # binds failed in a row: how long the next wait is

    @property
    def smsc_address(self) -> str:
        """``host:port`` this worker binds to (what /v1/status and /metrics label it with).

        The session's own address, not ``SMPP_ADDR``: ``serve`` points the worker
        at its embedded simulator (``SIMULATOR_PORT``) whatever that setting says.
        """
        cfg = self.config.session
        return f"{cfg.host}:{cfg.port}"

    async def bind(
        self,
        on_submit_response: Callable[..., None],
        on_deliver: Callable[[Any, int], None],
    ) -> SMPPSession | None:
        """A bound session (now ``self.session``), or None after a failure (logged)."""
        cfg = self.config.session
        if self.config.unusable:  # a setting only the operator can fix: retry slowly
            await self.set_state("disconnected", self.config.unusable)
            logger.error("SMPP connector %s: %s", self.config.connector, self.config.unusable)
            self._failures = len(self.config.reconnect_delays) - 1
            return None
        await self.set_state("connecting", self.smsc_address)
        session = self.session_factory(cfg, on_submit_response, on_deliver)
        try:
            await session.open()
        except BindRefused as exc:
            await self.set_state("disconnected", str(exc))
            if exc.status in BIND_REFUSED:
                # Wrong credentials do not fix themselves: say so loudly, retry slowly.
                logger.error("SMPP %s: check SMPP_USER / SMPP_PASSWD", exc)
                self._failures = len(self.config.reconnect_delays) - 1
            else:  # e.g. ESME_RALYBND: the SMSC still holds our old session
                logger.warning("SMPP %s", exc)
            return None
        except BindUnanswered as exc:
            await self.set_state("disconnected", str(exc))
            logger.error("SMPP %s", exc)
            return None
        except LinkError as exc:
            await self.set_state("disconnected", str(exc))
            logger.warning("SMPP connection failed: %s", exc)
            return None
        self._failures = 0
        self.session = session
        self.refusals.new_session()
        await self.set_state(BOUND, f"{cfg.host}:{cfg.port} as {cfg.system_id}")
        logger.info("SMPP connected to %s:%d (bind %s)", cfg.host, cfg.port, session.bind_id)
        return session

    async def unbound(self, reason: str, routine: bool) -> None:
        """The session has ended; a stop we were asked for is ``routine`` (INFO), any
        other loss is news (WARNING)."""
        self.session = None
        await self.set_state("disconnected", reason)
        logger.log(logging.INFO if routine else logging.WARNING, "SMPP disconnected: %s", reason)

    def backoff(self) -> float:
        """Seconds to wait before the next bind (grows with failures, capped)."""
        delays = self.config.reconnect_delays
        delay = delays[min(self._failures, len(delays) - 1)]
        self._failures += 1
        return delay

    def health(self) -> LinkHealth:
        """How the SMSC treats our submits: for /metrics and /v1/status, via the heartbeat."""
        refusals = self.refusals
        return LinkHealth(
            throttled=refusals.total(ESME_RTHROTTLED),
            queue_full=refusals.total(ESME_RMSGQFUL),
            refused=sum(refusals.totals.values()) - refusals.total(ESME_RTHROTTLED, ESME_RMSGQFUL),
            rate=self.rate.rate or 0.0,
            sent=self.rate.sent.rate(),
            refusing_for=refusals.refusing_for(),
            bells_dropped=BELLS.dropped,
        )

    async def watch_refusals(self) -> None:
        """A summary of the SMSC's refusals in the log (at most once an interval), and a
        session that refuses every submit for ``stall_rebind_after`` reported and rebound."""
        summary = self.refusals.take_summary(self.config.refusal_log_interval)
        if summary is not None:
            logger.warning("SMPP %s", self.describe_refusals(summary))
        if self.state != BOUND or not self.refusals.stalled():
            return
        last = self.refusals.last_status
        why = (
            f"every submit refused for {self.refusals.refusing_for():.0f} s (the last: "
            f"{'no answer' if last is None else status_name(last)})"
        )
        logger.error(
            "SMPP session stalled: %s; binding again (SMPP_STALL_REBIND_AFTER=%g s)",
            why,
            self.config.stall_rebind_after,
        )
        await self.set_state(STALLED, why)
        if self.session is not None:
            self.session.close(f"stalled: {why}; binding again")

    def describe_refusals(self, summary: RefusalSummary) -> str:
        """``submits refused in the last 10.0 s: 67 x ESME_RTHROTTLED; send rate now ...``"""
        counts = ", ".join(
            f"{count} x {'no answer' if status is None else status_name(status)}"
            for status, count in sorted(summary.counts.items(), key=lambda item: -item[1])
        )
        limit = self.rate.rate
        return (
            f"submits refused in the last {summary.seconds:.1f} s: {counts}; send rate now "
            f"{'unlimited' if limit is None else f'{limit:.1f}/s'} "
            f"(sent {self.rate.sent.rate():.1f}/s over the last second)"
        )

    async def set_state(self, state: str, detail: str) -> None:
        """Record the link's state (``LinkStatus``) and ring the ``link`` bell."""
        self.state = state
        try:
            await self.db.run(
                save_link_status,
                self.worker_id,
                state,
                detail,
                self.health().as_dict(),
                self.smsc_address,
                self.config.connector,
                self.config.bind_index,
            )
        except Exception:
            logger.warning("could not record link state %s", state, exc_info=True)
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            await layer.group_send(
                "link",
                {"type": "link.state", **link_payload(self.worker_id, state, detail)},
            )
        except Exception:
            logger.debug("link bell not rung", exc_info=True)

    async def heartbeat(self) -> None:
        """The link is alive; its health figures ride along."""
        await self.db.run(heartbeat, self.worker_id, self.health().as_dict())


def save_link_status(
    worker_id: str,
    state: str,
    detail: str,
    health: dict,
    smsc: str,
    connector: str = "",
    bind_index: int = 0,
) -> None:
    now = timezone.now()
    LinkStatus.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "state": state,
            "detail": detail[:200],
            "smsc": smsc[:200],
            "connector": connector,
            "bind_index": bind_index,
            "changed_at": now,
            "heartbeat_at": now,
            "health": health,
        },
    )


def heartbeat(worker_id: str, health: dict) -> None:
    # The health figures ride on the update the heartbeat makes anyway: no round trip more.
    LinkStatus.objects.filter(worker_id=worker_id).update(
        heartbeat_at=timezone.now(), health=health
    )
