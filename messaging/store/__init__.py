"""The message store: reads and writes of messages, parts, receipts and events, in batches.

Everything that changes a message goes through here, so that each change is
recorded with its transition and its event in one transaction. The functions
are synchronous (Django's ORM); the worker calls them from one database thread,
the API from its request threads. They return the notifications to publish
*after* commit; publishing is the caller's job (see ``messaging.notify``).

One module per job: ``types`` (what goes in and comes out), ``references``,
``creation``, ``claiming``, ``results`` (with ``result_batch`` and
``result_rows``), ``leases``, ``expiry``, ``settlement``, ``incoming``, and
``backends`` (the raw SQL of the hot path, one implementation per database).
The rules they follow live beside the store: the state machine
(``messaging.states``), the settlement rule (``messaging.settlement``) and the
event payloads (``messaging.event_payloads``).
This module re-exports the names callers use.
"""

from messaging.store.claiming import claim_parts
from messaging.store.creation import HandOver, create_handed_over, create_messages
from messaging.store.expiry import expire_overdue
from messaging.store.incoming import assemble_stale_fragments, store_fragments
from messaging.store.leases import requeue_abandoned
from messaging.store.references import allocate_references, take_references
from messaging.store.results import record_results, record_submit_outcomes, store_receipts
from messaging.store.types import (
    ClaimedPart,
    FragmentIn,
    NewMessage,
    Notifications,
    ReceiptIn,
    SmscAnswer,
    StoreChanges,
    SubmitOutcome,
    storable_text,
)

__all__ = [
    "ClaimedPart",
    "FragmentIn",
    "HandOver",
    "NewMessage",
    "Notifications",
    "ReceiptIn",
    "SmscAnswer",
    "StoreChanges",
    "SubmitOutcome",
    "allocate_references",
    "assemble_stale_fragments",
    "claim_parts",
    "create_handed_over",
    "create_messages",
    "expire_overdue",
    "record_results",
    "record_submit_outcomes",
    "requeue_abandoned",
    "storable_text",
    "store_fragments",
    "store_receipts",
    "take_references",
]
