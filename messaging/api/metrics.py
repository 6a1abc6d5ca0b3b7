"""Prometheus metrics at ``/metrics``, computed from the store at scrape time.

The worker serves no HTTP and there may be many server processes, so nothing
is counted in memory: every value is read from the database when Prometheus
asks, and any server process gives the same answer. Each query uses an index
(see the list in docs/operations.md); the latency figures look only at rows of
the last ``LATENCY_WINDOW`` seconds, at most ``LATENCY_SAMPLES`` of them.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.db.models import Count, Max
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from messaging.api.openapi import metrics_schema
from messaging.health import BOUND, STALLED, LinkHealth, heartbeat_max_age
from messaging.models import Event, IncomingFragment, LinkStatus, Message, MessagePart, Receipt
from messaging.routing import public_name
from messaging.states import State
from smpp.command_status import ESME_RTHROTTLED

logger = logging.getLogger(__name__)

LATENCY_WINDOW = 600.0  # seconds of history the latency figures cover
LATENCY_SAMPLES = 10_000  # newest rows looked at, at most
QUANTILES = (0.5, 0.9, 0.99, 1.0)
LINK_REPORT_WINDOW = 3600.0  # workers silent for longer are gone: not reported
LINK_STATES = ("connecting", BOUND, STALLED, "disconnected", "stopped")
# Every per-link family is labelled with the link's worker, connector and bind.
LINK_LABELS = ["worker_id", "connector", "bind"]


def link_labels(link: LinkStatus) -> list[str]:
    return [link.worker_id, public_name(link.connector), str(link.bind_index)]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of already sorted values (NaN when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_families(name: str, doc: str, seconds: Iterable[float]) -> list[Metric]:
    """``<name>{quantile=...}``, ``<name>_mean`` and ``<name>_samples`` for one window."""
    values = sorted(max(0.0, s) for s in seconds)
    by_quantile = GaugeMetricFamily(name, doc, labels=["quantile"])
    for q in QUANTILES:
        by_quantile.add_metric([f"{q:g}"], quantile(values, q))
    mean = GaugeMetricFamily(
        f"{name}_mean", f"Mean of {name} over the window.", value=_mean(values)
    )
    samples = GaugeMetricFamily(
        f"{name}_samples", f"Rows {name} was computed from.", value=len(values)
    )
    return [by_quantile, mean, samples]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _seconds(pairs: Iterable[tuple[datetime | None, datetime | None]]) -> Iterator[float]:
    for later, earlier in pairs:
        if later is not None and earlier is not None:
            yield (later - earlier).total_seconds()


class StoreCollector(Collector):
    """Every gauge the gateway reports, read from the store when scraped."""

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        try:
            families = list(self._from_store())
            up = 1
        except DatabaseError:
            logger.warning("metrics: the store did not answer", exc_info=True)
            families, up = [], 0
        yield from families
        yield GaugeMetricFamily(
            "smsapi_store_up", "1 when the message store answered this scrape.", value=up
        )
        yield GaugeMetricFamily(
            "smsapi_metrics_collect_seconds",
            "Time spent computing these metrics from the store.",
            value=time.perf_counter() - started,
        )

    def _from_store(self) -> Iterator[Metric]:
        now = timezone.now()
        links = list(
            LinkStatus.objects.filter(
                heartbeat_at__gte=now - timedelta(seconds=LINK_REPORT_WINDOW)
            ).order_by("worker_id")
        )
        yield from self._messages()
        yield from self._queue(now, [link.worker_id for link in links])
        yield from self._links(now, links)
        yield from self._receipts_and_incoming()
        yield from self._latencies(now)

    def _messages(self) -> Iterator[Metric]:
        counts = dict(
            Message.objects.order_by()
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        family = GaugeMetricFamily(
            "smsapi_messages", "Messages in the store, by state.", labels=["state"]
        )
        for state in State.values:
            family.add_metric([state], counts.get(state, 0))
        yield family

    def _queue(self, now: datetime, worker_ids: list[str]) -> Iterator[Metric]:
        queued = MessagePart.objects.filter(state=State.QUEUED)
        yield GaugeMetricFamily(
            "smsapi_queue_depth",
            "Parts queued and due now: waiting for a free window slot.",
            value=queued.filter(next_attempt_at__lte=now).count(),
        )
        waiting = (
            queued.filter(next_attempt_at__lte=now)
            .order_by()
            .values_list("message__connector")
            .annotate(n=Count("id"))
        )
        by_connector = GaugeMetricFamily(
            "smsapi_connector_queue_depth",
            "Parts queued and due now, by the connector they wait for.",
            labels=["connector"],
        )
        for connector, count in sorted(waiting):
            by_connector.add_metric([public_name(connector)], count)
        yield by_connector
        yield GaugeMetricFamily(
            "smsapi_parts_deferred",
            "Parts queued for later: scheduled messages and retries after a delay.",
            value=queued.filter(next_attempt_at__gt=now).count(),
        )
        yield GaugeMetricFamily(
            "smsapi_parts_throttled",
            "Queued parts whose last submit_sm the SMSC throttled (ESME_RTHROTTLED).",
            value=queued.filter(command_status=ESME_RTHROTTLED).count(),
        )
        in_flight = dict(
            MessagePart.objects.filter(state=State.SUBMITTING)
            .order_by()
            .values_list("worker")
            .annotate(n=Count("id"))
            .values_list("worker", "n")
        )
        window = GaugeMetricFamily(
            "smsapi_window_in_use",
            "Parts sent (or about to be) and not yet answered, by worker.",
            labels=["worker_id"],
        )
        for worker_id in sorted(set(in_flight) | set(worker_ids)):
            window.add_metric([worker_id], in_flight.get(worker_id, 0))
        yield window

    def _links(self, now: datetime, links: list[LinkStatus]) -> Iterator[Metric]:
        fresh_since = now - timedelta(seconds=heartbeat_max_age())
        up = GaugeMetricFamily(
            "smsapi_link_up",
            "1 when the link (one bind) is bound to its SMSC and its heartbeat is fresh.",
            labels=[*LINK_LABELS, "smsc"],
        )
        state = GaugeMetricFamily(
            "smsapi_link_state",
            "The state each link last reported (1 for its current state).",
            labels=[*LINK_LABELS, "state"],
        )
        age = GaugeMetricFamily(
            "smsapi_link_heartbeat_age_seconds",
            "Seconds since each link's worker last said it was alive.",
            labels=LINK_LABELS,
        )
        per_connector = GaugeMetricFamily(
            "smsapi_connector_links_bound",
            "Links bound with a fresh heartbeat, by connector.",
            labels=["connector"],
        )
        bound = 0
        bound_by_connector: Counter[str] = Counter()
        for link in links:
            is_up = link.state == BOUND and link.heartbeat_at >= fresh_since
            bound += is_up
            bound_by_connector[public_name(link.connector)] += is_up
            labels = link_labels(link)
            up.add_metric([*labels, link.smsc], int(is_up))
            for name in LINK_STATES:
                state.add_metric([*labels, name], int(link.state == name))
            age.add_metric(labels, (now - link.heartbeat_at).total_seconds())
        for connector, count in sorted(bound_by_connector.items()):
            per_connector.add_metric([connector], count)
        yield up
        yield state
        yield age
        yield per_connector
        yield GaugeMetricFamily(
            "smsapi_workers_bound", "Links bound to an SMSC with a fresh heartbeat.", value=bound
        )
        yield from self._link_health(links)

    def _link_health(self, links: list[LinkStatus]) -> Iterator[Metric]:
        """How the SMSC treats each worker's submits, as its last heartbeat said."""
        label = LINK_LABELS
        families = {
            "throttled": CounterMetricFamily(
                "smsapi_link_throttled",
                "submit_sm answered ESME_RTHROTTLED (0x58) since the worker started.",
                labels=label,
            ),
            "queue_full": CounterMetricFamily(
                "smsapi_link_queue_full",
                "submit_sm answered ESME_RMSGQFUL (0x14) since the worker started.",
                labels=label,
            ),
            "refused": CounterMetricFamily(
                "smsapi_link_refused",
                "submit_sm refused for now otherwise (0x08, 0x64) or never answered.",
                labels=label,
            ),
            "bells_dropped": CounterMetricFamily(
                "smsapi_link_bells_dropped",
                "Notifications the worker dropped on a full channel (the store has them).",
                labels=label,
            ),
            "rate": GaugeMetricFamily(
                "smsapi_link_rate_limit",
                "submit_sm a second the worker allows itself now (halved when throttled); "
                "0: no limit.",
                labels=label,
            ),
            "sent": GaugeMetricFamily(
                "smsapi_link_send_rate",
                "submit_sm a second the worker sent, over its last second.",
                labels=label,
            ),
            "refusing_for": GaugeMetricFamily(
                "smsapi_link_refusing_seconds",
                "Seconds since the SMSC began refusing the worker's submits with none accepted "
                "since (0: it takes them).",
                labels=label,
            ),
        }
        for link in links:
            health = LinkHealth.from_stored(link.health)
            if health is None:
                continue
            for name, family in families.items():
                family.add_metric(link_labels(link), getattr(health, name))
        yield from families.values()

    def _receipts_and_incoming(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "smsapi_receipts_unmatched",
            "Receipts kept whose id matches no sent part (yet).",
            value=Receipt.objects.filter(matched_at__isnull=True).count(),
        )
        yield GaugeMetricFamily(
            "smsapi_incoming_fragments_pending",
            "Parts of long incoming messages waiting for their other parts.",
            value=IncomingFragment.objects.filter(incoming__isnull=True).count(),
        )
        yield GaugeMetricFamily(
            "smsapi_last_event_id",
            "The newest event id: its rate is the rate of stream events.",
            value=Event.objects.aggregate(last=Max("id"))["last"] or 0,
        )

    def _latencies(self, now: datetime) -> Iterator[Metric]:
        since = now - timedelta(seconds=LATENCY_WINDOW)
        submits = (
            MessagePart.objects.filter(message__created_at__gte=since, submitted_at__isnull=False)
            .order_by("-message_id")
            .values_list("submitted_at", "message__created_at")[:LATENCY_SAMPLES]
        )
        yield from latency_families(
            "smsapi_submit_latency_seconds",
            "From a message being stored to the SMSC accepting its part, over the last 10 minutes.",
            _seconds(submits),
        )
        receipts = (
            Receipt.objects.filter(received_at__gte=since, part__submitted_at__isnull=False)
            .order_by("-id")
            .values_list("received_at", "part__submitted_at")[:LATENCY_SAMPLES]
        )
        yield from latency_families(
            "smsapi_receipt_latency_seconds",
            "From the SMSC accepting a part to its delivery receipt arriving, over the last "
            "10 minutes.",
            _seconds(receipts),
        )


def build_registry() -> CollectorRegistry:
    """The store's metrics plus this process's own (CPU, memory, GC)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


REGISTRY = build_registry()


class _AnyAccept(BaseContentNegotiation):
    """Scrapers send all sorts of Accept headers; the encoder is chosen below."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _TextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else str(data).encode()


@metrics_schema
class MetricsView(APIView):
    """GET /metrics: the Prometheus text format (or OpenMetrics when asked for)."""

    renderer_classes = [_TextRenderer]
    content_negotiation_class = _AnyAccept

    def get(self, request: Request) -> HttpResponse:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        response = HttpResponse(encoder(REGISTRY), content_type=content_type)
        response["Cache-Control"] = "no-store"
        return response
