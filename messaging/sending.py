"""Send and query, as the HTTP API and the JSON-RPC socket both offer them.

Protocol-free: takes the request's parameters, returns the HTTP status and the
JSON body. The views and the WebSocket consumer only translate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, IntegrityError
from rest_framework.exceptions import ValidationError

from .api_errors import first_error
from .api_keys import scoped_idempotency_key
from .models import ApiKey, Message, MessagePart
from .notify import ask_smsc, ring_worker
from .serializers import SendSerializer, TransitionSerializer
from .states import FINAL_STATES, State, smpp_state_name
from .store import create_messages

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # how often a waiting request looks at the store itself


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict


def send(
    data: dict, idempotency_key: str | None = None, api_key: ApiKey | None = None
) -> ApiAnswer:
    """Validate, store and (within ``wait``) see the SMSC accept a message.

    ``api_key`` (None when authentication is off) owns the message, and its
    Idempotency-Keys are its own.
    """
    idempotency_key = scoped_idempotency_key(idempotency_key, api_key)
    serializer = SendSerializer(data=data)
    try:
        serializer.is_valid(raise_exception=True)
    except ValidationError as exc:
        return ApiAnswer(400, {"error": first_error(exc.detail)})
    params = serializer.validated_data
    split = params["split"]
    if params.get("dry_run"):
        return ApiAnswer(200, _preview(split))

    request_hash = _request_hash(data) if idempotency_key else ""
    if idempotency_key:
        earlier = Message.objects.filter(idempotency_key=idempotency_key).first()
        if earlier is not None:
            return _replay(earlier, request_hash)

    wait = params.get("wait", 0.0)
    channel = _new_channel() if wait > 0 else ""
    try:
        (message,) = create_messages(
            [serializer.new_message(idempotency_key, request_hash, _owner_id(api_key))],
            notify_channel=channel,
        )
    except IntegrityError:
        if idempotency_key:  # the same key raced us: answer as the first one did
            earlier = Message.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                return _replay(earlier, request_hash)
        raise
    except DatabaseError as exc:
        logger.error("could not store a message: %s", exc)
        return ApiAnswer(503, {"error": "the message store is unavailable; retry later"})
    async_to_sync(ring_worker)()
    if wait > 0 and message.schedule_at is None:
        _wait_for_smsc(message.pk, channel, wait)
    return answer_for(Message.objects.get(pk=message.pk))


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
    # One serializer checks every item, as DRF's ListSerializer does: building a
    # serializer's fields (a deep copy of each) costs more than checking an item.
    serializer = SendSerializer()
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


def answer_for(message: Message) -> ApiAnswer:
    """The /v1/send answer for a stored message, as things stand now."""
    parts = list(message.parts.order_by("index"))
    smsc_ids = [p.smsc_id for p in parts]
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
    return answer_for(earlier)


def _new_channel() -> str:
    layer = get_channel_layer()
    return async_to_sync(layer.new_channel)() if layer is not None else ""


def _wait_for_smsc(message_id: int, channel: str, timeout: float) -> None:
    """Until the worker says the SMSC answered, or ``timeout``; the store decides."""
    async_to_sync(_wait_async)(message_id, channel, timeout)


def _smsc_answered(message_id: int) -> bool:
    """Every part has had an answer: a state past submitting, or back in the
    queue after an attempt (a retry later, so the request answers 202 now)."""
    parts = MessagePart.objects.filter(message_id=message_id).values_list("state", "attempts")
    return all(
        state not in (State.QUEUED, State.SUBMITTING) or (state == State.QUEUED and attempts)
        for state, attempts in parts
    )


async def _wait_async(message_id: int, channel: str, timeout: float) -> None:
    # One event loop for the whole wait: the layer's receive buffers belong to it.
    deadline = time.monotonic() + timeout
    layer = get_channel_layer()
    answered = sync_to_async(_smsc_answered)  # on the request thread, its connection
    while not await answered(message_id):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            if layer is not None and channel:
                await asyncio.wait_for(layer.receive(channel), min(left, POLL_INTERVAL * 4))
            else:
                await asyncio.sleep(min(left, POLL_INTERVAL))
        except TimeoutError:
            pass


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
