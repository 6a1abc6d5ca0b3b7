"""The rule "a message's state follows its parts", once, for every caller.

The store's batches of results, its ORM paths (leases, expiry), the operator's
actions and the API's wait for the SMSC's answer all settle a message with
``settle`` or ask ``answer_due``: none restates the rule. Pure: it reads the
parts' fields by name and returns what to write; applying it is the caller's job (one UPDATE per
message in the ORM paths, rows in memory in the worker's batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from messaging.states import State, check_message_transition, derive_message_state, is_final

# Still waiting for the SMSC: a request waiting for the answer is not told yet.
_ON_ITS_WAY = (State.QUEUED, State.SUBMITTING)


class PartFacts(Protocol):
    """What settling reads of each part (the store's part rows, the ORM's named rows)."""

    id: int
    state: str
    command_status: int | None
    error_code: int | None
    possibly_duplicated: bool


class Answer(Protocol):
    """What settling reads of one part's submit outcome (``store.SubmitOutcome``)."""

    command_status: int | None
    detail: str


@dataclass(frozen=True)
class Settled:
    """What settling one message decided; no ``fields``: nothing to write."""

    new_state: str
    fields: dict
    status: int | None  # the transition's command_status
    note: str  # the transition's detail
    notify: bool  # tell the request waiting for this message (``answer``)

    def answer(
        self, message_id: int, command_status: int | None, smsc_ids: list[str | None]
    ) -> tuple[int, str, int | None, list[str | None]]:
        """What the request waiting for this message is told, a ``store.SmscAnswer``
        (``command_status``: the message's before settling)."""
        status = self.fields.get("command_status", command_status)
        return (message_id, self.new_state, status, smsc_ids)


def answer_due(message_state: str, a_part_answered: bool) -> bool:
    """Whether a request waiting for the SMSC's answer to a message is answered now:
    once the message is past submitting (every part has its answer), or when it is
    back in the queue after an answer to one of its parts (a retry later: the
    request answers 202 rather than wait on)."""
    return message_state not in _ON_ITS_WAY or (message_state == State.QUEUED and a_part_answered)


def smsc_answered(parts: Iterable[tuple[str, int]]) -> bool:
    """``answer_due`` for a message read from the store: ``parts`` are (state,
    attempts). A part has had an answer when it was tried and is no longer in
    flight; the bell (``settle``) says the same when that answer is recorded."""
    states = []
    a_part_answered = False
    for state, attempts in parts:
        states.append(state)
        if attempts and state != State.SUBMITTING:
            a_part_answered = True
    return answer_due(derive_message_state(states), a_part_answered)


def settle(
    state: str,
    duplicated: bool,
    submitted_at: datetime | None,
    has_waiter: bool,
    parts: Sequence[PartFacts],
    outcomes_by_part: Mapping[int, Answer] | None,
    detail: str,
    now: datetime,
) -> Settled:
    """A message's state and fields from its parts: the rule, in one place.

    ``state``, ``duplicated``, ``submitted_at``: the message's as stored;
    ``parts``: the message's parts in index order;
    ``outcomes_by_part``: this batch's submit outcomes, by part id. The move is
    checked against ``states.MESSAGE_TRANSITIONS``.
    """
    new_state = derive_message_state(p.state for p in parts)
    dup = any(p.possibly_duplicated for p in parts)
    answered = outcomes_by_part is not None and any(p.id in outcomes_by_part for p in parts)
    notify = has_waiter and answer_due(new_state, answered)
    if new_state == state and dup == duplicated:
        return Settled(new_state, {}, None, "", notify)
    if new_state != state:
        check_message_transition(state, new_state)
    failing = next((p for p in parts if p.state == State.FAILED), None)
    outcome = outcomes_by_part and next(
        (outcomes_by_part[p.id] for p in parts if p.id in outcomes_by_part), None
    )
    status = failing.command_status if failing else (outcome.command_status if outcome else None)
    note = detail or (outcome.detail if outcome else "")
    fields = {"state": new_state, "updated_at": now, "possibly_duplicated": dup}
    if is_final(state) and not is_final(new_state):
        # Back in the queue (an operator's resend): the old ending is gone.
        fields["final_at"] = None
        fields["command_status"] = None
    if failing:
        fields["command_status"] = failing.command_status
    errors = [p.error_code for p in parts if p.error_code]
    if errors:
        fields["error_code"] = errors[0]
    if new_state == State.SUBMITTED and submitted_at is None:
        fields["submitted_at"] = now
    if is_final(new_state):
        fields["final_at"] = now
        if submitted_at is None and new_state != State.FAILED:
            fields["submitted_at"] = now
    return Settled(new_state, fields, status, note, notify)
