"""Every part matched to its own receipt, whatever the SMSC's id style and timing (issue 19).

At the store level, calling ``record_results`` as the worker does (its outcomes
as ``SubmitAnswers.on_response`` builds them, its receipts read by ``read_deliver``),
over id style x timing:

- ``before``: the receipt is written (kept unmatched) one or more writes before the response;
- ``same``: both in one write (the worker held the result for its receipt);
- ``after``: the receipt in the write right after the response's;
- ``later``: several writes later;
- ``reconnect``: the first send's response never came (the link dropped): its
  receipt is kept, the part is sent again and gets another id, whose receipt
  again comes before its response.

After every write, each part whose response and receipt have both been written
is delivered; at the end, each matched receipt sits on the part that was given
its id, ids are stored exactly as the SMSC gave them, and the first sends'
receipts of the ``reconnect`` parts are matched to no part. Marked ``store``:
``make test-postgres`` runs it on PostgreSQL too.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging import store
from messaging.models import Message, MessagePart, Receipt
from messaging.states import State
from messaging.store import SubmitOutcome
from smpp.smsc_ids import keys_match
from smpp_gateway.deliver import read_deliver
from smpp_gateway.simulator.id_styles import ID_STYLES, message_ids
from smpp_gateway.simulator.texts import receipt_text
from tests.factories import new_message

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


def _cross_base(number: int, upper: bool) -> tuple[str, str]:
    return format(number, "X" if upper else "x"), str(number)


# style -> number -> (id in submit_sm_resp, id in the receipt)
STYLES = {name or "plain": (lambda n, name=name: message_ids(name, n)) for name in ID_STYLES}
STYLES |= {
    "hex-response-decimal-receipt": lambda n: _cross_base(n, upper=False),
    "upper-hex-response-decimal-receipt": lambda n: _cross_base(n, upper=True),
    "decimal-response-hex-receipt": lambda n: _cross_base(n, upper=False)[::-1],
}
TIMINGS = ("before", "same", "after", "later", "reconnect")
# Ids a real SMSC has in flight at once are close together (a counter) or random
# and long: the numbers here lie within SPREAD of each other, from BASES on.
SPREAD = 10_000
BASES = st.integers(min_value=10**6, max_value=10**15)


def deliver_sm(receipt_id: str, *, tlv: bool):
    """A receipt deliver_sm as the session decodes it: the id in the text, or in the TLV."""
    text = receipt_text(receipt_id, "DELIVRD", 0, 0.0, 0.0, "hello")
    return SimpleNamespace(
        esm_class=0x04,
        short_message=text,
        receipted_message_id=receipt_id.encode() if tlv else None,
        message_state=2 if tlv else None,
        network_error_code=None,
        source_addr=b"4915550000",
        destination_addr=b"bart",
    )


def outcome(part_id: int, message_id: int, kind: str, smsc_id: str = "") -> SubmitOutcome:
    return SubmitOutcome(
        part_id=part_id,
        message_id=message_id,
        outcome=kind,
        command_status=0 if kind == SubmitOutcome.SUBMITTED else None,
        smsc_id=smsc_id.strip(),  # as the worker's SubmitAnswers keeps it
        bind_id="b1",
        sequence=1,
        retry_at=timezone.now() if kind == SubmitOutcome.UNKNOWN else None,
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    style=st.sampled_from(sorted(STYLES)),
    base=BASES,
    parts=st.lists(
        st.tuples(
            st.integers(0, SPREAD - 1),  # the id's number, from base
            st.sampled_from(TIMINGS),
            st.integers(0, 4),  # the write the first of its events goes in
            st.integers(0, 2),  # extra writes between its events
            st.booleans(),  # the receipt's id in the TLV (else only in the text)
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda p: p[0],
    ),
)
def test_every_part_is_matched_to_its_own_receipt(style, base, parts):
    Receipt.objects.all().delete()
    Message.objects.all().delete()
    messages = store.create_messages(
        [new_message(f"m{i}", dst=f"49155{i:05d}") for i in range(len(parts))]
    )
    claimed = {c.message_id: c for c in store.claim_parts("w1", 100, 60)}
    ids_of = STYLES[style]
    writes: dict[int, tuple[list, list]] = {}
    expected: dict[int, tuple[str, str]] = {}  # part id -> (response id, receipt id)
    stale_receipts: list[str] = []  # receipts of first sends whose response never came
    due_together: dict[int, int] = {}  # part id -> the write after which both are in

    def put(slot: int, item) -> None:
        outcomes, receipts = writes.setdefault(slot, ([], []))
        (receipts if isinstance(item, str) else outcomes).append(item)

    for i, (offset, timing, first, gap, tlv) in enumerate(parts):
        part = claimed[messages[i].pk]
        response_id, receipt_id = ids_of(base + offset)
        expected[part.part_id] = (response_id, receipt_id)
        submitted = outcome(part.part_id, part.message_id, SubmitOutcome.SUBMITTED, response_id)
        receipt = ("tlv:" if tlv else "text:") + receipt_id
        if timing == "before":
            put(first, receipt)
            put(last := first + 1 + gap, submitted)
        elif timing == "same":
            put(last := first, submitted)
            put(first, receipt)
        elif timing == "after":
            put(first, submitted)
            put(last := first + 1, receipt)
        elif timing == "later":
            put(first, submitted)
            put(last := first + 3 + gap, receipt)
        else:  # reconnect: the first send's id is another number, never in a response
            old_id = ids_of(base + SPREAD + i)[1]
            stale_receipts.append(old_id)
            put(first, "text:" + old_id)
            put(first + 1, outcome(part.part_id, part.message_id, SubmitOutcome.UNKNOWN))
            # Sent again after the write above (claimed again), then receipt before response.
            put(first + 2 + gap, receipt)
            put(last := first + 3 + gap, submitted)
        due_together[part.part_id] = last

    resent: set[int] = set()
    for slot in range(max(writes) + 1):
        outcomes, receipts = writes.get(slot, ([], []))
        for o in outcomes:
            if o.outcome == SubmitOutcome.SUBMITTED and o.part_id in resent:
                resent.discard(o.part_id)
        store.record_results(
            outcomes,
            [
                read_deliver(deliver_sm(r.split(":", 1)[1], tlv=r.startswith("tlv:")))
                for r in receipts
            ],
        )
        resent |= {c.part_id for c in store.claim_parts("w1", 100, 60)}  # the reconnect's resends
        done = [p for p, last in due_together.items() if last <= slot]
        states = dict(MessagePart.objects.filter(pk__in=done).values_list("pk", "state"))
        assert all(state == State.DELIVERED for state in states.values()), (slot, states)

    assert not resent
    for part_id, smsc_id, state in MessagePart.objects.values_list("pk", "smsc_id", "state"):
        response_id, receipt_id = expected[part_id]
        assert (smsc_id, state) == (response_id, State.DELIVERED)  # the id kept as given
        matched = list(Receipt.objects.filter(part_id=part_id).values_list("smsc_id", flat=True))
        assert matched == [receipt_id]
        assert keys_match(smsc_id, receipt_id)
    unmatched = set(Receipt.objects.filter(part__isnull=True).values_list("smsc_id", flat=True))
    assert unmatched == set(stale_receipts)
    assert Message.objects.exclude(state=State.DELIVERED).count() == 0
