"""The SMSC's answers to our submits (submit_sm_resp, or none in time) turned into results.

The session matches each response to its part by sequence number and calls
``SubmitAnswers.on_response``; a part whose response never came is reported
with ``status=None``. What each answer means for the part is decided by the
small functions below (``timed_out``, ``accepted``, ``refused``); the class
keeps the books the answers feed (refusals, the send rate) and hands the
result to the next write, or to the receipt wait.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from messaging.store import ClaimedPart, SubmitOutcome
from smpp.command_status import Reaction, reaction_for, status_name
from smpp.flow import AdaptiveRate, SubmitRefusals
from smpp.receipts import submit_id_problem

if TYPE_CHECKING:
    from smpp_gateway.worker.link import Link
    from smpp_gateway.worker.receipt_wait import ReceiptWait
    from smpp_gateway.worker.results import Pending

logger = logging.getLogger("smpp_gateway.worker")  # one logger for every part of the worker

RETRY_DELAYS = {
    Reaction.RETRY_THROTTLED: 1.0,
    Reaction.RETRY_QUEUE_FULL: 10.0,
    Reaction.RETRY_SYSTEM: 5.0,
    Reaction.REBIND: 0.0,
}


def timed_out(part: ClaimedPart, bind_id: str, sequence: int) -> SubmitOutcome:
    """No submit_sm_resp in time: the SMSC may have it; sent again, at once."""
    logger.warning(
        "message %d part %d: no submit_sm_resp in time; sending it again",
        part.message_id,
        part.index,
        extra={"message_id": part.message_id, "part": part.index},
    )
    return SubmitOutcome(
        part_id=part.part_id,
        message_id=part.message_id,
        outcome=SubmitOutcome.UNKNOWN,
        bind_id=bind_id,
        sequence=sequence,
        retry_at=timezone.now(),
        detail="no submit_sm_resp in time",
    )


def accepted(part: ClaimedPart, smsc_id: str, bind_id: str, sequence: int) -> SubmitOutcome:
    """Accepted: submitted under ``smsc_id`` (kept as the SMSC gave it; matched by key).

    An id no receipt can match (none) or that the store would have to cut is a
    protocol error for this part: failed, never a part waiting for ever or
    sharing its id with another.
    """
    problem = submit_id_problem(smsc_id)
    if problem:
        logger.error(
            "message %d part %d: %s; the part is failed",
            part.message_id,
            part.index,
            problem,
            extra={"message_id": part.message_id, "part": part.index},
        )
        return SubmitOutcome(
            part_id=part.part_id,
            message_id=part.message_id,
            outcome=SubmitOutcome.FAILED,
            command_status=0,
            bind_id=bind_id,
            sequence=sequence,
            detail=problem,
        )
    return SubmitOutcome(
        part_id=part.part_id,
        message_id=part.message_id,
        outcome=SubmitOutcome.SUBMITTED,
        command_status=0,
        smsc_id=smsc_id,
        bind_id=bind_id,
        sequence=sequence,
    )


def refused(
    part: ClaimedPart, status: int, reaction: Reaction, bind_id: str, sequence: int
) -> SubmitOutcome:
    """Refused: failed for good, or tried again after a delay that grows with attempts."""
    if reaction == Reaction.FAIL:
        logger.info(
            "message %d part %d refused by the SMSC: %s",
            part.message_id,
            part.index,
            status_name(status),
            extra={"message_id": part.message_id, "part": part.index, "command_status": status},
        )
        return SubmitOutcome(
            part_id=part.part_id,
            message_id=part.message_id,
            outcome=SubmitOutcome.FAILED,
            command_status=status,
            bind_id=bind_id,
            sequence=sequence,
            detail=status_name(status),
        )
    delay = RETRY_DELAYS.get(reaction, 5.0) * min(part.attempts, 6)
    return SubmitOutcome(
        part_id=part.part_id,
        message_id=part.message_id,
        outcome=SubmitOutcome.RETRY,
        command_status=status,
        bind_id=bind_id,
        sequence=sequence,
        retry_at=timezone.now() + timedelta(seconds=delay),
        detail=status_name(status),
    )


class SubmitAnswers:
    """The session's ``on_submit_response``: results to the store, refusals counted."""

    def __init__(
        self,
        link: Link,
        pending: Pending,
        receipt_wait: ReceiptWait,
        rate: AdaptiveRate,
        refusals: SubmitRefusals,
    ) -> None:
        self.link = link
        self.pending = pending
        self.receipt_wait = receipt_wait
        self.rate = rate
        self.refusals = refusals

    def on_response(
        self, part: ClaimedPart, status: int | None, message_id: str, sequence: int
    ) -> None:
        """One answer (``status`` None: none in time) for ``part``."""
        session = self.link.session
        bind_id = session.bind_id if session else ""
        if status == 0:
            if self.refusals.refusing_since is not None:
                self.refusals.accepted()
            outcome = accepted(part, message_id.strip(), bind_id, sequence)
            if outcome.outcome == SubmitOutcome.SUBMITTED and self.receipt_wait.try_hold(
                part, outcome
            ):
                return
        elif status is None:
            self.refusals.refused(None)  # counted and timed (see Link.watch_refusals)
            outcome = timed_out(part, bind_id, sequence)
        else:
            reaction = reaction_for(status)
            if reaction.retryable:
                self.refusals.refused(status)
            if reaction == Reaction.RETRY_THROTTLED:
                self.rate.throttled()
            elif reaction == Reaction.REBIND and session is not None:
                session.close("the SMSC says we are not bound: binding again")
            outcome = refused(part, status, reaction, bind_id, sequence)
        self.pending.outcomes.append(outcome)
        if part.waited:
            self.pending.awaited = True
        self.pending.wanted.set()
