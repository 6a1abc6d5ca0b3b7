"""What the SMSC answered: submit outcomes and receipts, written in one batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import transaction

from messaging.store.backends import Sql
from messaging.store.result_batch import _ResultBatch
from messaging.store.types import Notifications, ReceiptIn, SubmitOutcome
from smpp.smsc_ids import IdStyle

RESULTS_LOCK = 0x534D5301  # advisory lock taken by every batch of results (PostgreSQL)
#
# The worker's calls (claim_parts, record_results) run thousands of times a
# second: they use raw SQL (``backends``) and rows held as small objects
# (``result_rows``) rather than model instances. The rules are the ones the ORM
# paths (leases, expiry) follow, shared through ``messaging.settlement``.


def record_submit_outcomes(
    outcomes: Iterable[SubmitOutcome], max_attempts: int = 10, connector: str = ""
) -> Notifications:
    """Write what ``connector``'s SMSC answered (or did not) for a batch of submits.

    A part that would be tried again fails after ``max_attempts`` and expires
    when the next try would come after its message's validity.
    """
    return record_results(list(outcomes), (), max_attempts, connector)


def store_receipts(receipts: Sequence[ReceiptIn], connector: str = "") -> Notifications:
    """Keep every receipt of ``connector``'s SMSC; match those whose part is known
    (among the parts that SMSC took: its ids are unique only there); settle their
    messages.

    A receipt whose id matches no part yet is kept unmatched: its part may be
    waiting for its submit_sm_resp, and ``record_submit_outcomes`` matches it then.
    """
    return record_results((), receipts, connector=connector)


def record_results(
    outcomes: Sequence[SubmitOutcome],
    receipts: Sequence[ReceiptIn],
    max_attempts: int = 10,
    connector: str = "",
    id_style: str = IdStyle.AUTO,
) -> Notifications:
    """``record_submit_outcomes(outcomes)`` then ``store_receipts(receipts)``, in one
    transaction: the same rows, transitions and events as the two calls, with a
    few statements for the whole batch instead of several per message. Both from
    ``connector``'s SMSC ("": the default connector's), which writes its ids in
    ``id_style`` (``smpp.smsc_ids.IdStyle``; the receipts' keys already follow it)."""
    if not outcomes and not receipts:
        return Notifications()
    with transaction.atomic(), Sql() as sql:
        sql.use_indexes()
        # Workers write results one at a time. Otherwise a receipt that reached
        # another worker (SMSCs deliver to any bind of the account) could be stored
        # unmatched while its part's SMSC id is being written, neither transaction
        # seeing the other's row, and stay unmatched for good.
        sql.serialize(RESULTS_LOCK)
        batch = _ResultBatch(sql, connector, id_style)
        batch.load(outcomes, receipts)
        if outcomes:
            batch.apply_outcomes(outcomes, max_attempts)
        if receipts:
            batch.apply_receipts(receipts)
        return batch.write()
