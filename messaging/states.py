"""The life of a message and of its parts, as plain rules: the one state machine.

A message is sent as one or more SMPP parts. Each part moves through
``queued -> submitting -> submitted -> (delivered | undeliverable | expired |
rejected)`` or ends ``failed`` when the SMSC refuses it. The message's own
state is derived from its parts (``messaging.settlement``), so it can never
disagree with them.

``TRANSITIONS`` (parts) and ``MESSAGE_TRANSITIONS`` (messages) are the only
statement of which moves are legal. Every writer goes through them: row by
row writers call ``check_transition``; set-based SQL writers build their
``WHERE state ...`` guard from ``sources_of`` with ``state_guard``, so no
writer keeps a hand-written list of states. tests/test_states.py checks the
tables against each other and against ``derive_message_state``.
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
# What a receipt may report (``RECEIPT_STATE``): every final state but failed.
_RECEIPT_STATES = frozenset({State.DELIVERED, State.UNDELIVERABLE, State.EXPIRED, State.REJECTED})

# Which moves a part may make, and who makes them:
# - queued -> submitting: a claim; -> expired: its validity ran out unsent;
#   -> failed: an operator cancelled it; -> a receipt's state: the part was requeued
#   (its lease ran out) but the late submit_sm_resp gave it its SMSC id, and then
#   its receipt came.
# - submitting -> what the SMSC answered: submitted, failed, queued (retry, no
#   answer, never sent, lease ran out), expired (the retry would come too late),
#   or a receipt's state (a receipt may overtake its submit_sm_resp).
# - submitted -> what its receipt reports.
# - failed -> queued: an operator resends it.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.SUBMITTING, State.FAILED} | _RECEIPT_STATES),
    State.SUBMITTING: frozenset({State.QUEUED, State.SUBMITTED} | FINAL_STATES),
    State.SUBMITTED: _RECEIPT_STATES,
    State.DELIVERED: frozenset(),
    State.UNDELIVERABLE: frozenset(),
    State.EXPIRED: frozenset(),
    State.REJECTED: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),
}

# Which moves a message may make: the ones its parts' moves imply through
# ``derive_message_state`` (one batch may move several parts, each once or twice),
# plus the claim's queued -> submitting. tests/test_states.py derives this table
# from ``TRANSITIONS`` and checks that it is exactly this one.
MESSAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.SUBMITTING, State.SUBMITTED} | FINAL_STATES),
    State.SUBMITTING: frozenset({State.QUEUED, State.SUBMITTED} | FINAL_STATES),
    State.SUBMITTED: FINAL_STATES,
    State.DELIVERED: frozenset(),
    State.UNDELIVERABLE: frozenset(),
    State.EXPIRED: frozenset(),
    State.REJECTED: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),  # an operator resent its failed parts
}


class IllegalTransition(ValueError):
    pass


def can_transition(current: str, new: str, table: dict[str, frozenset[str]] = TRANSITIONS) -> bool:
    """Whether the table (parts' by default) allows ``current -> new``."""
    return new in table[current]


def check_transition(
    current: str, new: str, table: dict[str, frozenset[str]] = TRANSITIONS
) -> None:
    """The one check every writer makes before it moves a part (or, with
    ``MESSAGE_TRANSITIONS``, a message): raises IllegalTransition when the table
    does not allow the move."""
    if new not in table[current]:
        kind = "message" if table is MESSAGE_TRANSITIONS else "part"
        raise IllegalTransition(f"a {current} {kind} cannot become {new}")


def check_message_transition(current: str, new: str) -> None:
    """``check_transition`` against ``MESSAGE_TRANSITIONS``."""
    check_transition(current, new, MESSAGE_TRANSITIONS)


def sources_of(
    new: str,
    within: Iterable[str] | None = None,
    table: dict[str, frozenset[str]] = TRANSITIONS,
) -> tuple[str, ...]:
    """The states the table lets move to ``new``, in ``State`` order: the guard of
    a set-based writer (``WHERE state IN sources_of(new)``).

    ``within``: the writer picks only some of those rows (say, parts in flight);
    each must be a legal source, or IllegalTransition is raised, so a writer's
    own selection is checked against the table as well.
    """
    if within is not None:
        for state in within:
            check_transition(state, new, table)
        chosen = set(within)
        return tuple(s.value for s in State if s in chosen)
    return tuple(s.value for s in State if new in table[s])


def state_guard(column: str, states: Iterable[str], mark: str = "%s") -> tuple[str, list[str]]:
    """``column = %s`` (one state) or ``column IN (%s, ...)``, and its parameters:
    the SQL form of a ``sources_of`` guard. One state stays an equality, so the
    planners walk the same index as before."""
    params = list(states)
    if not params:
        raise IllegalTransition(f"no state may move: an empty guard on {column}")
    if len(params) == 1:
        return f"{column} = {mark}", params
    return f"{column} IN ({', '.join([mark] * len(params))})", params


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
