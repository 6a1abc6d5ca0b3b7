"""Send and query, as the HTTP API and the JSON-RPC socket both offer them.

Protocol-free: takes the request's parameters, returns the HTTP status and the
JSON body. The views and the WebSocket consumer only translate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError, IntegrityError
from rest_framework.exceptions import ValidationError

from .api_errors import first_error
from .api_keys import scoped_idempotency_key
from .events import in_db_thread
from .intake import message_intake
from .models import ApiKey, Message, MessagePart
from .notify import ask_smsc, ring_worker
from .serializers import TransitionSerializer, send_serializer
from .smsc_answers import smsc_answers
from .states import FINAL_STATES, State, smpp_state_name
from .store import create_messages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict


async def send(
    data: dict, idempotency_key: str | None = None, api_key: ApiKey | None = None
) -> ApiAnswer:
    """Validate, store and (within ``wait``) see the SMSC accept a message.

    ``api_key`` (None when authentication is off) owns the message, and its
    Idempotency-Keys are its own. The message is stored with those of other
    requests in flight (``MessageIntake``), and a waiting request is told the
    SMSC's answer by its process's ``SmscAnswers``, from the worker's bell: no
    read-back, no channel of its own.
    """
    idempotency_key = scoped_idempotency_key(idempotency_key, api_key)
    serializer = send_serializer()
    try:
        params = serializer.run_validation(data)
    except ValidationError as exc:
        return ApiAnswer(400, {"error": first_error(exc.detail)})
    if params.get("dry_run"):
        return ApiAnswer(200, _preview(params["split"]))

    request_hash = _request_hash(data) if idempotency_key else ""
    if idempotency_key:
        answer = await in_db_thread(_replay_earlier)(idempotency_key, request_hash)
        if answer is not None:
            return answer

    wait = params.get("wait", 0.0) if params.get("schedule") is None else 0.0
    answers = smsc_answers() if wait > 0 else None
    new = serializer.new_message(idempotency_key, request_hash, _owner_id(api_key), data=params)
    if answers is not None:
        new.notify_channel = await answers.prepare()
    try:
        message = await message_intake().store(new)
    except IntegrityError:
        if idempotency_key:  # the same key raced us: answer as the first one did
            answer = await in_db_thread(_replay_earlier)(idempotency_key, request_hash)
            if answer is not None:
                return answer
        raise
    except DatabaseError as exc:
        logger.error("could not store a message: %s", exc)
        return ApiAnswer(503, {"error": "the message store is unavailable; retry later"})
    if answers is None:
        return answer_for(message, [None] * message.parts_count)
    answered = await answers.wait(message.pk, wait)
    if answered is None:  # no answer in time: as things stand now
        return await in_db_thread(_current_answer)(message.pk)
    _, message.state, message.command_status, smsc_ids = answered
    return answer_for(message, smsc_ids)


def send_batch(
    items: object, idempotency_key: str | None = None, api_key: ApiKey | None = None
) -> ApiAnswer:
    """Validate every item as /v1/send does, store the valid ones in one
    transaction, and answer per item in order. Nothing waits for the SMSC."""
    idempotency_key = scoped_idempotency_key(idempotency_key, api_key)
    limit = settings.SMS_BATCH_MAX
    if not isinstance(items, list):
        return ApiAnswer(400, {"error": "a JSON array of send objects expected"})
    if len(items) > limit:
        return ApiAnswer(400, {"error": f"{len(items)} messages in one batch; at most {limit}"})
    results: list[dict] = []
    accepted: list[tuple[int, object]] = []  # (position, NewMessage)
    keys = [f"{idempotency_key}#{i}" if idempotency_key else None for i in range(len(items))]
    earlier = (
        {m.idempotency_key: m for m in Message.objects.filter(idempotency_key__in=keys)}
        if idempotency_key
        else {}
    )
    serializer = send_serializer()
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            results.append({"http_status": 400, "error": "a JSON object expected"})
            continue
        try:
            data = serializer.run_validation(item)
        except ValidationError as exc:
            results.append({"http_status": 400, "error": first_error(exc.detail)})
            continue
        key = keys[position]
        if key in earlier:
            answer = _replay(earlier[key], _request_hash(item))
            results.append({"http_status": answer.status, **answer.body})
            continue
        results.append({})
        new = serializer.new_message(
            key, _request_hash(item) if key else "", _owner_id(api_key), data=data
        )
        accepted.append((position, new))
    if accepted:
        try:
            messages = create_messages([new for _, new in accepted])
        except IntegrityError:
            return ApiAnswer(409, {"error": "Idempotency-Key already used by a concurrent batch"})
        except DatabaseError as exc:
            logger.error("could not store a batch: %s", exc)
            return ApiAnswer(503, {"error": "the message store is unavailable; retry later"})
        async_to_sync(ring_worker)()
        for (position, _), message in zip(accepted, messages, strict=True):
            results[position] = {
                "http_status": 202,
                "id": str(message.pk),
                "message_id": None,
                "status": message.state,
                "parts": message.parts_count,
                "encoding": message.encoding,
            }
    rejected = sum(1 for r in results if r["http_status"] >= 400)
    return ApiAnswer(
        200, {"accepted": len(results) - rejected, "rejected": rejected, "results": results}
    )


def answer_for(message: Message, smsc_ids: list[str | None]) -> ApiAnswer:
    """The /v1/send answer for a stored message and its parts' SMSC ids, in order."""
    body = {
        "message_id": smsc_ids[0] if smsc_ids and all(smsc_ids) else None,
        "id": str(message.pk),
        "status": message.state,
        "parts": message.parts_count,
        "encoding": message.encoding,
        "message_ids": smsc_ids,
    }
    if message.ucs2_forced_by:
        body["ucs2_forced_by"] = list(message.ucs2_forced_by)
    if message.state == State.FAILED:
        from smpp_gateway.command_status import status_name, status_text

        status = message.command_status or 0
        return ApiAnswer(
            502,
            {
                "error": status_text(status),
                "command_status": status,
                "command_status_name": status_name(status),
                **body,
            },
        )
    if body["message_id"] is None:
        return ApiAnswer(202, body)
    return ApiAnswer(200, body)


def _current_answer(message_id: int) -> ApiAnswer:
    """The /v1/send answer for a stored message, as things stand now (reads the store)."""
    message = Message.objects.get(pk=message_id)
    return answer_for(message, _smsc_ids(message))


def _smsc_ids(message: Message) -> list[str | None]:
    return list(message.parts.order_by("index").values_list("smsc_id", flat=True))


def _replay_earlier(idempotency_key: str, request_hash: str) -> ApiAnswer | None:
    """The answer to an earlier request with this Idempotency-Key, if there was one."""
    earlier = Message.objects.filter(idempotency_key=idempotency_key).first()
    return None if earlier is None else _replay(earlier, request_hash)


def _owner_id(api_key: ApiKey | None) -> int | None:
    return api_key.pk if api_key is not None else None


def _preview(split) -> dict:
    return {
        "dry_run": True,
        "encoding": split.encoding,
        "data_coding": split.data_coding,
        "parts": len(split.parts),
        "units": split.units,
        "unit_name": split.unit_name,
        "ucs2_forced_by": list(split.ucs2_forced_by),
    }


def _request_hash(data: dict) -> str:
    canonical = json.dumps({k: str(v) for k, v in data.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(earlier: Message, request_hash: str) -> ApiAnswer:
    if earlier.request_hash != request_hash:
        return ApiAnswer(
            409,
            {
                "error": "Idempotency-Key already used with a different request",
                "id": str(earlier.pk),
            },
        )
    return answer_for(earlier, _smsc_ids(earlier))


# --- query -------------------------------------------------------------------------------


def query(params: dict, api_key: ApiKey | None = None) -> ApiAnswer:
    """The delivery state of a message, by the SMSC's id or ours.

    With ``api_key``, only that key's messages exist: another key's is a 404.
    """
    from smpp_gateway.receipts import smsc_id_variants

    smsc_id = str(params.get("message_id") or "").strip()
    our_id = str(params.get("id") or "").strip()
    if not smsc_id and not our_id:
        return ApiAnswer(400, {"error": 'missing parameter "message_id": message id from send'})
    message = None
    if our_id:
        if not (our_id.isascii() and our_id.isdigit()):
            return ApiAnswer(404, {"error": f'message "{our_id}" not found'})
        messages = Message.objects.filter(pk=int(our_id))
        if api_key is not None:
            messages = messages.filter(api_key=api_key)
        message = messages.first()
    else:
        parts = MessagePart.objects.filter(smsc_id__in=smsc_id_variants(smsc_id))
        if api_key is not None:
            parts = parts.filter(message__api_key=api_key)
        part = parts.select_related("message").first()
        message = part.message if part else None
    if message is None:
        return ApiAnswer(404, {"error": f'message "{smsc_id or our_id}" not found'})
    body = query_body(message)
    first_id = body["message_ids"][0] if body["message_ids"] else None
    if settings.SMPP_QUERY_SM and message.state not in FINAL_STATES and first_id:
        # No final receipt yet: ask the SMSC itself (query_sm), as the old server did.
        smsc = async_to_sync(ask_smsc)(
            {
                "message_id": first_id,
                "src": message.src,
                "src_ton": message.src_ton,
                "src_npi": message.src_npi,
            },
            settings.SMPP_QUERY_TIMEOUT,
        )
        if smsc and "message_state" in smsc and smsc.get("command_status") == 0:
            from .states import SMPP_STATE_NAMES

            body["message_state"] = SMPP_STATE_NAMES.get(smsc["message_state"], "UNKNOWN")
            body["final_date"] = smsc.get("final_date") or body["final_date"]
            body["error_code"] = smsc.get("error_code") or body["error_code"]
            body["source"] = "smsc"
    return ApiAnswer(200, body)


def query_body(message: Message) -> dict:
    receipt = message.receipts.order_by("-id").first()
    if receipt is not None and receipt.message_state and message.state not in FINAL_STATES:
        from .states import SMPP_STATE_NAMES

        state_name = SMPP_STATE_NAMES.get(receipt.message_state, "UNKNOWN")
    else:
        state_name = smpp_state_name(message.state, scheduled=message.schedule_at is not None)
    final = receipt.done_date if receipt and receipt.done_date else message.final_at
    return {
        "message_state": state_name,
        "final_date": final.isoformat() if final else "",
        "error_code": message.error_code or (message.command_status or 0),
        "id": str(message.pk),
        "status": message.state,
        "parts": message.parts_count,
        "message_ids": [p.smsc_id for p in message.parts.order_by("index")],
        "history": TransitionSerializer(message.transitions.all(), many=True).data,
    }
