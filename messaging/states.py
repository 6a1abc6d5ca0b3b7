"""The life of a message and of its parts, as plain rules.

A message is sent as one or more SMPP parts. Each part moves through
``queued -> submitting -> submitted -> (delivered | undeliverable | expired |
rejected)`` or ends ``failed`` when the SMSC refuses it. The message's own
state is derived from its parts, so it can never disagree with them.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models


class State(models.TextChoices):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"


FINAL_STATES = frozenset(
    {State.DELIVERED, State.UNDELIVERABLE, State.EXPIRED, State.REJECTED, State.FAILED}
)

# Which moves are legal. A receipt may overtake its submit_sm_resp, so a part
# may go from submitting straight to a final receipt state.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.SUBMITTING, State.EXPIRED, State.FAILED}),
    State.SUBMITTING: frozenset(
        {State.QUEUED, State.SUBMITTED, State.FAILED, State.EXPIRED} | FINAL_STATES
    ),
    State.SUBMITTED: frozenset(
        {State.DELIVERED, State.UNDELIVERABLE, State.EXPIRED, State.REJECTED, State.QUEUED}
    ),
    State.DELIVERED: frozenset(),
    State.UNDELIVERABLE: frozenset(),
    State.EXPIRED: frozenset(),
    State.REJECTED: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),  # an operator may resend a failed message
}


class IllegalTransition(ValueError):
    pass


def can_transition(current: str, new: str) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: str, new: str) -> None:
    if not can_transition(current, new):
        raise IllegalTransition(f"a {current} message cannot become {new}")


def is_final(state: str) -> bool:
    return state in FINAL_STATES


# Order of severity used to pick the message state when its parts disagree:
# the message is only as far along as its least advanced part, and one failed
# part fails the whole message.
_PROGRESS = [State.QUEUED, State.SUBMITTING, State.SUBMITTED]
_FAILURES = [State.FAILED, State.REJECTED, State.UNDELIVERABLE, State.EXPIRED]


def derive_message_state(part_states: Iterable[str]) -> str:
    """Return the message state implied by the states of its parts.

    - any part failed/rejected/undeliverable/expired: the first such kind, in
      that order of severity, once no part is still on its way;
    - all parts delivered: delivered;
    - otherwise the least advanced part's state.
    """
    states = list(part_states)
    if not states:
        return State.QUEUED
    pending = [s for s in states if not is_final(s)]
    if pending:
        return min(pending, key=_PROGRESS.index)
    for failure in _FAILURES:
        if failure in states:
            return failure
    return State.DELIVERED


# SMPP message_state names, as /v1/query reports them.
SMPP_STATE_NAMES = {
    1: "ENROUTE",
    2: "DELIVERED",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIVERABLE",
    6: "ACCEPTED",
    7: "UNKNOWN",
    8: "REJECTED",
    0: "SCHEDULED",
}

_QUERY_NAMES = {
    # Not yet given to the SMSC: SMPP's "delivery not yet initiated" (message_state 0),
    # never ENROUTE, which would claim the SMSC has it.
    State.QUEUED: "SCHEDULED",
    State.SUBMITTING: "ENROUTE",
    State.SUBMITTED: "ENROUTE",
    State.DELIVERED: "DELIVERED",
    State.UNDELIVERABLE: "UNDELIVERABLE",
    State.EXPIRED: "EXPIRED",
    State.REJECTED: "REJECTED",
    State.FAILED: "REJECTED",
}


def smpp_state_name(state: str, scheduled: bool = False) -> str:
    """The SMPP message_state name for one of our states (for /v1/query)."""
    if scheduled and state == State.QUEUED:
        return "SCHEDULED"
    return _QUERY_NAMES[state]


# Receipt stat (or message_state TLV) -> the part state it moves to. ENROUTE,
# ACCEPTD and UNKNOWN are intermediate: the part stays submitted.
RECEIPT_STATE = {
    2: State.DELIVERED,
    3: State.EXPIRED,
    4: State.UNDELIVERABLE,  # DELETED: the SMSC gave up on it
    5: State.UNDELIVERABLE,
    8: State.REJECTED,
}
