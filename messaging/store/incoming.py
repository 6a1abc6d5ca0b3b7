"""Incoming messages (deliver_sm): fragments kept, complete messages assembled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from messaging.event_payloads import mo_payload
from messaging.models import IncomingFragment, IncomingMessage
from messaging.store.types import FragmentIn, Notifications, StoreChanges, storable_text
from sms.reassembly import Fragment, assemble

# --- incoming messages -------------------------------------------------------------


def store_fragments(
    fragments: Sequence[FragmentIn], default_alphabet: str = "gsm7", connector: str = ""
) -> Notifications:
    """Keep incoming deliver_sm parts from ``connector``'s SMSC; assemble the messages
    that are complete (of parts from that SMSC only: references are its own)."""
    if not fragments:
        return Notifications()
    with transaction.atomic():
        changes = StoreChanges()
        rows = IncomingFragment.objects.bulk_create(
            [
                IncomingFragment(
                    src=f.src,
                    dst=f.dst,
                    data_coding=f.data_coding,
                    reference=f.reference,
                    total=f.total,
                    seq=f.seq,
                    payload=f.payload,
                    received_at=changes.now,
                    connector=connector,
                )
                for f in fragments
            ]
        )
        singles = [r for r in rows if r.reference is None or r.total <= 1]
        for row in singles:
            _assemble([row], changes, default_alphabet)
        keys = {(r.src, r.dst, r.reference, r.total) for r in rows if r not in singles}
        for src, dst, reference, total in keys:
            group = list(_open_parts(src, dst, reference, total, connector))
            if len({g.seq for g in group}) >= total:
                _assemble(group, changes, default_alphabet)
        return changes.flush()


def assemble_stale_fragments(older_than: float, default_alphabet: str = "gsm7") -> Notifications:
    """Deliver what arrived of long messages whose other parts never came."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    with transaction.atomic():
        changes = StoreChanges()
        stale = IncomingFragment.objects.filter(incoming__isnull=True, received_at__lt=cutoff)
        keys = set(stale.values_list("src", "dst", "reference", "total", "connector"))
        for src, dst, reference, total, connector in keys:
            group = list(_open_parts(src, dst, reference, total, connector).select_for_update())
            if group:
                _assemble(group, changes, default_alphabet)
        return changes.flush()


def _open_parts(src: str, dst: str, reference: int, total: int, connector: str) -> QuerySet:
    """The parts of one long message not yet put together: one sender, one handset,
    one reference, one SMSC."""
    return IncomingFragment.objects.filter(
        incoming__isnull=True,
        src=src,
        dst=dst,
        reference=reference,
        total=total,
        connector=connector,
    )


def _assemble(rows: list[IncomingFragment], changes: StoreChanges, default_alphabet: str) -> None:
    first = rows[0]
    assembled = assemble(
        [
            Fragment(
                reference=r.reference or 0,
                total=r.total,
                seq=r.seq,
                payload=bytes(r.payload),
                data_coding=r.data_coding,
            )
            for r in rows
        ],
        default_alphabet=default_alphabet,
    )
    incoming = IncomingMessage.objects.create(
        src=first.src,
        dst=first.dst,
        # An SMS with a NUL is garbled anyway.
        text=storable_text(assembled.text or ""),
        binary_hex=assembled.binary_hex or "",
        data_coding=first.data_coding,
        parts_expected=assembled.parts_expected,
        parts_received=assembled.parts_received,
        complete=assembled.complete,
        received_at=changes.now,
        connector=first.connector,
    )
    IncomingFragment.objects.filter(id__in=[r.pk for r in rows]).update(incoming=incoming)
    changes.event(
        "mo",
        mo_payload(
            incoming.pk,
            incoming.src,
            incoming.dst,
            incoming.text,
            incoming.data_coding,
            incoming.binary_hex,
            incoming.parts_expected,
            incoming.complete,
            incoming.connector,
        ),
    )
