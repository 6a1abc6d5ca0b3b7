"""Failover: queued messages moved off a connector that is gone, disabled or down.

Only a message none of whose parts has left is moved: every part queued and
unclaimed (all parts of a long message go through one SMSC, and a part in a
worker's hands may be on the wire). A part that came back after an unknown
outcome is already marked possibly duplicated, so a move never sends anything
twice unflagged. The parts are locked for the move (``SKIP LOCKED``: a part a
worker is claiming leaves its message where it is, to be tried next round).

One race is left, on purpose: on PostgreSQL a claim that started before a move
committed may still take a moved part for the old connector (its worker just
bound again). The part is sent once, through that connector, and its receipt is
matched by the part's own connector; only ``Message.connector`` names the other.

Where a message goes is the routing rule's choice (``messaging.connectors.
RoutingState.reroute``), handed in as ``choose``: the store knows no routes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from messaging.models import Message, MessagePart
from messaging.routing import MessageFacts
from messaging.states import State

# (facts, message id, current connector) -> the connector to move it to, or None
Chooser = Callable[[MessageFacts, int, str], str | None]


@dataclass
class Rerouted:
    """What a round did: the messages moved, by (from, to), and how many it looked at
    (0: none of the connectors had a queued message)."""

    moved: Counter[tuple[str, str]] = field(default_factory=Counter)
    examined: int = 0


def reroute_queued(
    from_connectors: Collection[str], choose: Chooser, limit: int = 1000
) -> Rerouted:
    """Move up to ``limit`` queued messages of ``from_connectors`` where ``choose`` says."""
    result = Rerouted()
    moved = result.moved
    if not from_connectors:
        return result
    with transaction.atomic():
        messages = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(state=State.QUEUED, connector__in=list(from_connectors))
            .only("id", "dst", "src", "api_key_id", "connector", "parts_count", "encoding")
            .order_by("id")[:limit]
        )
        result.examined = len(messages)
        targets: dict[int, str] = {}
        for message in messages:
            facts = MessageFacts(message.dst, message.src, message.api_key_id, message.encoding)
            target = choose(facts, message.pk, message.connector)
            if target is not None and target != message.connector:
                targets[message.pk] = target
        if not targets:
            return result
        free_parts: Counter[int] = Counter(
            message_id
            for message_id, state, lease in MessagePart.objects.select_for_update(skip_locked=True)
            .filter(message_id__in=list(targets))
            .values_list("message_id", "state", "lease_until")
            if state == State.QUEUED and lease is None
        )
        by_target: dict[str, list[int]] = defaultdict(list)
        for message in messages:
            target = targets.get(message.pk)
            if target is not None and free_parts[message.pk] == message.parts_count:
                by_target[target].append(message.pk)
                moved[(message.connector, target)] += 1
        now = timezone.now()
        for target, ids in by_target.items():
            Message.objects.filter(pk__in=ids).update(connector=target, updated_at=now)
    return result


def queued_connectors() -> set[str]:
    """The connectors queued messages wait for (one pass over the queue: at start)."""
    return set(
        Message.objects.filter(state=State.QUEUED)
        .order_by()
        .values_list("connector", flat=True)
        .distinct()
    )
