"""The state machine: the transition tables, the settlement rule, and the SQL
guards built from the tables (the event payloads: tests/test_event_payloads.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messaging import settlement
from messaging.states import (
    FINAL_STATES,
    MESSAGE_TRANSITIONS,
    RECEIPT_STATE,
    TRANSITIONS,
    IllegalTransition,
    State,
    can_transition,
    check_message_transition,
    check_transition,
    derive_message_state,
    sources_of,
    state_guard,
)

Q, SUBMITTING, SUBMITTED = State.QUEUED, State.SUBMITTING, State.SUBMITTED
DELIVERED, UNDELIVERABLE, EXPIRED = State.DELIVERED, State.UNDELIVERABLE, State.EXPIRED
REJECTED, FAILED = State.REJECTED, State.FAILED
ALL = list(State)
PAIRS = list(itertools.product(ALL, ALL))

# The moves the writers make, each named by who makes it. The table must say
# exactly this: a move added to the code without the table (or the other way
# round) fails here.
WRITERS_MOVES = {
    (Q, SUBMITTING): "claim_parts",
    (Q, EXPIRED): "expire_overdue; a receipt for a requeued part",
    (Q, FAILED): "operator cancel_queued",
    (Q, DELIVERED): "a receipt for a requeued part that kept its late SMSC id",
    (Q, UNDELIVERABLE): "the same",
    (Q, REJECTED): "the same",
    (SUBMITTING, Q): "outcomes retry/unknown/unsent; requeue_abandoned",
    (SUBMITTING, SUBMITTED): "outcome submitted",
    (SUBMITTING, FAILED): "outcome failed; retry past max_attempts",
    (SUBMITTING, EXPIRED): "retry past validity; receipt overtaking its response",
    (SUBMITTING, DELIVERED): "receipt overtaking its response",
    (SUBMITTING, UNDELIVERABLE): "the same",
    (SUBMITTING, REJECTED): "the same",
    (SUBMITTED, DELIVERED): "receipt",
    (SUBMITTED, UNDELIVERABLE): "receipt",
    (SUBMITTED, EXPIRED): "receipt",
    (SUBMITTED, REJECTED): "receipt",
    (FAILED, Q): "operator resend_failed",
}


# --- the part table -------------------------------------------------------------


def test_the_table_covers_every_state_and_names_only_states():
    assert set(TRANSITIONS) == set(ALL) == set(MESSAGE_TRANSITIONS)
    for table in (TRANSITIONS, MESSAGE_TRANSITIONS):
        for current, targets in table.items():
            assert targets <= set(ALL)
            assert current not in targets  # staying put is not a move


def test_the_table_says_what_the_writers_do():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == set(WRITERS_MOVES)


@pytest.mark.parametrize(("current", "new"), PAIRS)
def test_every_allowed_move_passes_and_every_other_raises(current, new):
    if (current, new) in WRITERS_MOVES:
        assert can_transition(current, new)
        check_transition(current, new)
    else:
        assert not can_transition(current, new)
        with pytest.raises(IllegalTransition):
            check_transition(current, new)


@pytest.mark.parametrize(("current", "new"), PAIRS)
def test_message_moves_pass_or_raise_by_the_message_table(current, new):
    if new in MESSAGE_TRANSITIONS[current]:
        check_message_transition(current, new)
    else:
        with pytest.raises(IllegalTransition, match="message"):
            check_message_transition(current, new)


def test_final_states_have_no_way_out_but_an_operators_resend():
    for table in (TRANSITIONS, MESSAGE_TRANSITIONS):
        exits = {state: table[state] for state in FINAL_STATES}
        assert exits == {
            DELIVERED: frozenset(),
            UNDELIVERABLE: frozenset(),
            EXPIRED: frozenset(),
            REJECTED: frozenset(),
            FAILED: frozenset({Q}),
        }


def test_a_receipt_moves_any_part_not_yet_final_and_no_final_one():
    for receipt_state in set(RECEIPT_STATE.values()):
        for state in ALL:
            assert can_transition(state, receipt_state) == (state not in FINAL_STATES)


# --- the message table, derived from the part table -----------------------------


def _one_settle(part_state: str, message_state: str) -> set[str]:
    """Where one part may be by the next settle: a batch moves a part at most twice
    (an outcome, then a waiting receipt); only an operator takes a part out of
    failed, and only for a failed message."""
    reach = {part_state}
    for first in TRANSITIONS[part_state]:
        if part_state == FAILED and message_state != FAILED:
            continue
        reach.add(first)
        if part_state != FAILED and first != FAILED:
            reach |= TRANSITIONS[first]
    return reach


def _message_moves(max_parts: int = 3) -> set[tuple[str, str]]:
    """Every message move that settling messages of up to ``max_parts`` parts can
    make, walking from "all queued" along the part table (and the claim, which
    makes a queued message submitting without settling)."""
    moves = set()
    for count in range(1, max_parts + 1):
        start = ((Q,) * count, Q)
        seen, todo = {start}, [start]
        while todo:
            parts, message = todo.pop()
            for after in itertools.product(*[_one_settle(p, message) for p in parts]):
                settled = derive_message_state(after)
                if settled != message:
                    moves.add((message, settled))
                nexts = [(tuple(sorted(after)), settled)]
                claimed = any(a == Q and b == SUBMITTING for a, b in zip(parts, after, strict=True))
                if message == Q and claimed:
                    moves.add((Q, SUBMITTING))
                    nexts.append((tuple(sorted(after)), SUBMITTING))
                for state in nexts:
                    if state not in seen:
                        seen.add(state)
                        todo.append(state)
    return moves


def test_the_message_table_is_what_the_part_table_implies():
    table = {(a, b) for a, targets in MESSAGE_TRANSITIONS.items() for b in targets}
    assert _message_moves() == table


# --- deriving a message's state ---------------------------------------------------

part_states = st.lists(st.sampled_from(ALL), min_size=1, max_size=6)
_ORDER = [Q, SUBMITTING, SUBMITTED]


def test_a_message_without_parts_is_queued():
    assert derive_message_state([]) == Q


@pytest.mark.parametrize("state", ALL)
def test_a_single_part_message_is_in_its_part_state(state):
    assert derive_message_state([state]) == state


@given(part_states)
def test_a_message_on_its_way_is_as_far_as_its_least_advanced_part(states):
    pending = [s for s in states if s not in FINAL_STATES]
    derived = derive_message_state(states)
    if pending:
        assert derived == _ORDER[min(_ORDER.index(s) for s in pending)]
    else:
        assert derived in FINAL_STATES


@given(part_states)
def test_a_finished_message_takes_its_worst_ending(states):
    if any(s not in FINAL_STATES for s in states):
        return
    derived = derive_message_state(states)
    for worst in (FAILED, REJECTED, UNDELIVERABLE, EXPIRED):
        if worst in states:
            assert derived == worst
            break
    else:
        assert derived == DELIVERED


@given(part_states, st.randoms())
def test_the_order_of_the_parts_does_not_matter(states, random):
    shuffled = list(states)
    random.shuffle(shuffled)
    assert derive_message_state(shuffled) == derive_message_state(states)


# --- the settlement rule ------------------------------------------------------------

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=1)
part_rows = st.lists(
    st.tuples(
        st.sampled_from(ALL),
        st.one_of(st.none(), st.integers(0, 0x45)),  # command_status
        st.one_of(st.none(), st.integers(0, 3)),  # error_code
        st.booleans(),  # possibly duplicated
    ),
    min_size=1,
    max_size=4,
)


class Part(NamedTuple):
    """What settling reads of a part (``settlement.PartFacts``)."""

    id: int
    state: str
    command_status: int | None
    error_code: int | None
    possibly_duplicated: bool


def _parts(rows):
    return [Part(i, *row) for i, row in enumerate(rows, start=1)]


@given(part_rows, st.sampled_from(ALL), st.booleans(), st.booleans())
def test_settle_follows_the_parts(rows, state, duplicated, submitted_before):
    parts = _parts(rows)
    new_state = derive_message_state(p[1] for p in parts)
    submitted_at = EARLIER if submitted_before else None
    if new_state != state and new_state not in MESSAGE_TRANSITIONS[state]:
        with pytest.raises(IllegalTransition):
            settlement.settle(state, duplicated, submitted_at, False, parts, None, "", NOW)
        return
    result = settlement.settle(state, duplicated, submitted_at, False, parts, None, "", NOW)
    dup = any(p[4] for p in parts)
    assert result.new_state == new_state
    if new_state == state and dup == duplicated:
        assert result.fields == {}
        return
    fields = result.fields
    assert fields["state"] == new_state and fields["updated_at"] == NOW
    assert fields["possibly_duplicated"] == dup
    failed = [p for p in parts if p[1] == FAILED]
    if failed:  # the first failed part's status is the message's
        assert fields["command_status"] == failed[0][2] == result.status
    errors = [p[3] for p in parts if p[3]]
    assert fields.get("error_code") == (errors[0] if errors else None)
    final = new_state in FINAL_STATES
    assert fields.get("final_at") == (NOW if final else fields.get("final_at"))
    if not final and state in FINAL_STATES:  # back in the queue: the ending is gone
        assert fields["final_at"] is None
        assert fields["command_status"] == (failed[0][2] if failed else None)
    reached_smsc = new_state == SUBMITTED or (final and new_state != FAILED)
    assert ("submitted_at" in fields) == (reached_smsc and not submitted_before)


def test_settle_takes_the_note_and_status_from_the_first_outcome():
    class Outcome:
        command_status = 0x58
        detail = "throttled"

    parts = [Part(1, Q, 0x58, None, False), Part(2, SUBMITTING, None, None, False)]
    result = settlement.settle(SUBMITTING, False, None, True, parts, {1: Outcome()}, "", NOW)
    assert (result.new_state, result.status, result.note) == (Q, 0x58, "throttled")
    assert result.notify  # back in the queue after an answer: the request answers now
    assert result.answer(7, None, ["a", None]) == (7, Q, None, ["a", None])
    detailed = settlement.settle(SUBMITTING, False, None, True, parts, {1: Outcome()}, "x", NOW)
    assert detailed.note == "x"


def test_settle_refuses_a_move_the_message_table_forbids():
    with pytest.raises(IllegalTransition):
        settlement.settle(
            DELIVERED, False, EARLIER, False, [Part(1, Q, None, None, False)], None, "", NOW
        )


@pytest.mark.parametrize("state", ALL)
@pytest.mark.parametrize("answered", [False, True])
def test_a_waiting_request_is_answered_once_the_smsc_has_answered(state, answered):
    expected = state not in (Q, SUBMITTING) or (state == Q and answered)
    assert settlement.answer_due(state, answered) == expected
    parts = [Part(1, state, None, None, False)]
    result = settlement.settle(
        state, False, None, True, parts, {1: None} if answered else None, "", NOW
    )
    assert result.notify == expected
    silent = settlement.settle(state, False, None, False, parts, None, "", NOW)
    assert not silent.notify  # nobody waits


@given(st.lists(st.tuples(st.sampled_from(ALL), st.integers(0, 3)), min_size=1, max_size=4))
def test_the_poll_answers_whenever_every_part_has_an_answer(parts):
    """The poll (``smsc_answered``) answers at least whenever each part is past
    submitting or back in the queue after an attempt (what it answered before it
    followed the settlement rule), and never while a message is untried."""
    every_part = all(s not in (Q, SUBMITTING) or (s == Q and a) for s, a in parts)
    if every_part:
        assert settlement.smsc_answered(parts)
    if all(s in (Q, SUBMITTING) for s, _ in parts) and not any(s == Q and a for s, a in parts):
        assert not settlement.smsc_answered(parts)


def test_the_poll_and_the_bell_agree_on_a_retry_beside_a_part_in_flight():
    # Part 1 was refused for now (back in the queue after one attempt), part 2 is
    # still with the SMSC: the bell told the request to answer 202; so does the poll.
    parts = [Part(1, Q, 0x58, None, False), Part(2, SUBMITTING, None, None, False)]
    bell = settlement.settle(SUBMITTING, False, None, True, parts, {1: None}, "", NOW)
    assert bell.notify
    assert settlement.smsc_answered([(Q, 1), (SUBMITTING, 1)])


# --- guards built from the table -----------------------------------------------------


def test_sources_of_reads_the_table():
    for new in ALL:
        assert set(sources_of(new)) == {s for s in ALL if new in TRANSITIONS[s]}
        assert set(sources_of(new, table=MESSAGE_TRANSITIONS)) == {
            s for s in ALL if new in MESSAGE_TRANSITIONS[s]
        }
    assert sources_of(SUBMITTING) == (Q,)
    assert sources_of(Q) == (SUBMITTING, FAILED)  # in State order
    assert sources_of(Q, within=[SUBMITTING]) == (SUBMITTING,)
    with pytest.raises(IllegalTransition):
        sources_of(Q, within=[SUBMITTED])  # a writer's own selection is checked


def test_state_guard_is_the_sql_of_the_sources(monkeypatch):
    assert state_guard("p.state", sources_of(SUBMITTING)) == ("p.state = %s", ["queued"])
    assert state_guard("state", sources_of(Q), mark="?") == (
        "state IN (?, ?)",
        ["submitting", "failed"],
    )
    monkeypatch.setitem(TRANSITIONS, Q, TRANSITIONS[Q] - {SUBMITTING})
    with pytest.raises(IllegalTransition):
        state_guard("p.state", sources_of(SUBMITTING))


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_the_claim_takes_what_the_table_lets_become_submitting(monkeypatch):
    from messaging import store
    from messaging.models import Message, MessagePart
    from tests.factories import new_message

    queued, failed = store.create_messages([new_message("one"), new_message("two")])
    MessagePart.objects.filter(message=failed).update(state=FAILED)
    Message.objects.filter(pk=failed.pk).update(state=FAILED)
    # Were the table to let a failed part be claimed, the claim would take it:
    # its guard is built from the table, not written by hand.
    monkeypatch.setitem(TRANSITIONS, FAILED, TRANSITIONS[FAILED] | {SUBMITTING})
    claimed = store.claim_parts("w1", 10, 60)
    assert {c.message_id for c in claimed} == {queued.pk, failed.pk}
    monkeypatch.undo()
    monkeypatch.setitem(TRANSITIONS, Q, TRANSITIONS[Q] - {SUBMITTING})  # nothing may be claimed
    with pytest.raises(IllegalTransition):
        store.claim_parts("w1", 10, 60)


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_requeue_and_expiry_check_their_moves_against_the_table(monkeypatch):
    from messaging import store

    monkeypatch.setitem(TRANSITIONS, SUBMITTING, TRANSITIONS[SUBMITTING] - {Q})
    with pytest.raises(IllegalTransition):
        store.requeue_abandoned()
    monkeypatch.setitem(TRANSITIONS, Q, TRANSITIONS[Q] - {EXPIRED})
    with pytest.raises(IllegalTransition):
        store.expire_overdue()


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_a_receipt_for_a_requeued_part_with_its_late_id_delivers_it():
    """The move queued -> delivered the table allows: the part's lease ran out, the
    late submit_sm_resp gave it its SMSC id, then its receipt came."""
    from messaging import store
    from messaging.models import Message, MessagePart
    from messaging.store import SubmitOutcome
    from tests.factories import new_message, receipt

    (message,) = store.create_messages([new_message()])
    (claimed,) = store.claim_parts("dead-worker", 10, -1)
    assert store.requeue_abandoned() == 1
    store.record_submit_outcomes(
        [SubmitOutcome(part_id=claimed.part_id, outcome="submitted", smsc_id="late1")]
    )
    assert MessagePart.objects.get().state == Q  # the id is kept, the state is not moved
    store.store_receipts([receipt("late1")])
    assert MessagePart.objects.get().state == DELIVERED
    assert Message.objects.get(pk=message.pk).state == DELIVERED
