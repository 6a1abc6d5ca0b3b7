"""Binds shared between worker processes (PostgreSQL): each held by exactly one.

Every round (``SMPP_CONNECTOR_RELOAD`` seconds) a worker process says it is
alive (``WorkerPresence``), renews the claims it holds and takes free binds up
to its fair share: the wanted binds divided by the live workers, rounded up.
A bind whose claim was not renewed within ``ttl`` is free: its worker died, and
another takes it over. A worker holding more than its share (another joined)
is told which to give back; it drains and unbinds them first, then releases
them (``release_binds``), so two sessions never hold one bind at once except
while a dead worker's claim runs out.

Rounds are serialised by a transaction-scoped advisory lock, so two workers
never take the same free bind. SQLite has one worker, which holds every bind
without claims.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from messaging.models import BindClaim, WorkerPresence

# pg_advisory_xact_lock key of the claim rounds ("smsbinds" in ASCII).
ROUND_LOCK = 0x736D7362696E6473

BindKey = tuple[str, int, str]  # (connector, bind index, kind)


@dataclass(frozen=True)
class BindRound:
    """What a round left this worker with: the binds it holds, and those it holds
    beyond its share (to drain, unbind and release)."""

    held: frozenset[BindKey]
    surplus: frozenset[BindKey]
    workers: int  # live workers sharing the binds


def claim_binds(worker_id: str, wanted: Iterable[BindKey], ttl: float) -> BindRound:
    """One round for ``worker_id`` (see the module's docstring)."""
    wanted = sorted(set(wanted))
    now = timezone.now()
    until = now + timedelta(seconds=ttl)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROUND_LOCK])
        WorkerPresence.objects.update_or_create(worker_id=worker_id, defaults={"heartbeat_at": now})
        live = WorkerPresence.objects.filter(heartbeat_at__gte=now - timedelta(seconds=ttl))
        workers = max(1, live.count())
        WorkerPresence.objects.filter(heartbeat_at__lt=now - timedelta(seconds=10 * ttl)).delete()
        claims = {(c.connector, c.bind_index, c.kind): c for c in BindClaim.objects.all()}
        wanted_set = set(wanted)
        gone = [c.pk for key, c in claims.items() if key not in wanted_set]
        BindClaim.objects.filter(pk__in=gone).delete()
        share = math.ceil(len(wanted) / workers)
        mine = [key for key in wanted if key in claims and claims[key].owner == worker_id]
        BindClaim.objects.filter(owner=worker_id).update(lease_until=until)
        free = [
            key
            for key in wanted
            if key not in claims
            or (claims[key].owner != worker_id and claims[key].lease_until < now)
        ]
        taken = free[: max(0, share - len(mine))]
        for connector, index, kind in taken:
            BindClaim.objects.update_or_create(
                connector=connector,
                bind_index=index,
                kind=kind,
                defaults={"owner": worker_id, "lease_until": until},
            )
        held = mine + taken
        surplus = mine[share:] if len(mine) > share else []
    return BindRound(frozenset(held), frozenset(surplus), workers)


def release_binds(worker_id: str, keys: Iterable[BindKey] | None = None) -> None:
    """Give back ``keys`` (all this worker holds when None); on a stop, its presence too."""
    claims = BindClaim.objects.filter(owner=worker_id)
    if keys is None:
        claims.delete()
        WorkerPresence.objects.filter(worker_id=worker_id).delete()
        return
    for connector, index, kind in keys:
        claims.filter(connector=connector, bind_index=index, kind=kind).delete()
