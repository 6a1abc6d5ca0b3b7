"""The answers of send: what a client is told about a stored message.

One shape for every way a message is answered (at once, once the SMSC has
answered, replayed for an Idempotency-Key used before), so a client cannot tell
a replay from the first answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from messaging.models import Message
from messaging.routing import public_name
from messaging.states import State
from smpp.command_status import status_name, status_text


@dataclass(frozen=True)
class ApiAnswer:
    """An HTTP status and its JSON body (the JSON-RPC socket sends the same body)."""

    status: int
    body: dict


def answer_for(message: Message, smsc_ids: list[str | None]) -> ApiAnswer:
    """The /v1/send answer for a stored message and its parts' SMSC ids, in order."""
    body = {
        "message_id": smsc_ids[0] if smsc_ids and all(smsc_ids) else None,
        "id": str(message.pk),
        "status": message.state,
        "parts": message.parts_count,
        "encoding": message.encoding,
        "message_ids": smsc_ids,
        "connector": public_name(message.connector),
    }
    if message.ucs2_forced_by:
        body["ucs2_forced_by"] = list(message.ucs2_forced_by)
    if message.state == State.FAILED:
        status = message.command_status or 0
        # Status 0 on a failed message: the SMSC did not refuse it, the gateway could
        # not go on with it (an SMSC id it cannot keep, a part it cannot encode); the
        # reason is in the message's transitions, which this answer does not read.
        error = (
            status_text(status)
            if status
            else f"the message could not be sent; see /v1/messages/{message.pk} for why"
        )
        return ApiAnswer(
            502,
            {
                "error": error,
                "command_status": status,
                "command_status_name": status_name(status),
                **body,
            },
        )
    if body["message_id"] is None:
        return ApiAnswer(202, body)
    return ApiAnswer(200, body)


def accepted(message: Message) -> ApiAnswer:
    """202 for a message that is stored and whose SMSC answer is not known here."""
    return ApiAnswer(
        202,
        {
            "message_id": None,
            "id": str(message.pk),
            "status": State.QUEUED,
            "parts": message.parts_count,
            "encoding": message.encoding,
            "message_ids": [None] * message.parts_count,
            "connector": public_name(message.connector),
        },
    )


def smsc_ids_of(message: Message) -> list[str | None]:
    """The SMSC's ids of the message's parts, in order (None: not accepted yet)."""
    return list(message.parts.order_by("index").values_list("smsc_id", flat=True))


def replay(earlier: Message, request_hash: str) -> ApiAnswer:
    """The answer again for a request whose Idempotency-Key stored ``earlier``; 409
    when the request is not the same one (``request_hash`` differs)."""
    if earlier.request_hash != request_hash:
        return ApiAnswer(
            409,
            {
                "error": "Idempotency-Key already used with a different request",
                "id": str(earlier.pk),
            },
        )
    return answer_for(earlier, smsc_ids_of(earlier))


def replay_earlier(idempotency_key: str, request_hash: str) -> ApiAnswer | None:
    """The answer to an earlier request with this Idempotency-Key, if there was one."""
    earlier = Message.objects.filter(idempotency_key=idempotency_key).first()
    return None if earlier is None else replay(earlier, request_hash)
