"""Send and query, as the HTTP API and the JSON-RPC socket both offer them.

Protocol-free: takes the request's parameters, returns the HTTP status and the
JSON body. The views and the WebSocket consumer only translate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError
from rest_framework.exceptions import ValidationError

from messaging.api.errors import STORE_UNAVAILABLE, first_error
from messaging.api.intake import message_intake
from messaging.api.serializers import TransitionSerializer, send_serializer
from messaging.api.smsc_answers import smsc_answers
from messaging.api_keys import scoped_idempotency_key
from messaging.events import in_db_thread
from messaging.models import ApiKey, Message, MessagePart
from messaging.notify import ask_smsc, ring_worker
from messaging.states import FINAL_STATES, SMPP_STATE_NAMES, State, smpp_state_name
from messaging.store import NewMessage, create_messages
from smpp.command_status import status_name, status_text
from smpp.smsc_ids import SMSC_ID_MAX_LENGTH, match_keys

logger = logging.getLogger(__name__)

# An Idempotency-Key: printable ASCII, short enough that "<API key id>:<key>#<batch
# position>" always fits Message.idempotency_key (200 characters).
IDEMPOTENCY_KEY_MAX_LENGTH = 128
_IDEMPOTENCY_KEY = re.compile(rf"[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")
_STORED_KEY_MAX_LENGTH = Message._meta.get_field("idempotency_key").max_length
INVALID_IDEMPOTENCY_KEY = (
    f'invalid header "Idempotency-Key": at most {IDEMPOTENCY_KEY_MAX_LENGTH} '
    "printable ASCII characters"
)
# Ids the store can look up: our ids are 64-bit, the SMSC's are text.
MAX_OUR_ID = 2**63 - 1
# Control characters, and lone surrogates (a JSON body's "\ud800": no store can hold one).
_UNSTORABLE_CHARACTER = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

# A bug met while checking one message: logged with its traceback; the client is
# told its message was refused (nothing was stored), never a 500.
UNCHECKED = "the parameters could not be checked (logged on the server); nothing was stored"
UNSTORABLE = "the message store cannot hold these parameters; nothing was stored"


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict


def idempotency_key_error(key: str | None) -> str | None:
    """What is wrong with a client's Idempotency-Key, or None when it is usable (or absent)."""
    if key is None or _IDEMPOTENCY_KEY.fullmatch(key) is not None:
        return None
    return INVALID_IDEMPOTENCY_KEY


def _stored_key_fits(key: str | None) -> bool:
    return key is None or len(key) <= _STORED_KEY_MAX_LENGTH


def _validate(serializer, data: object) -> dict | ApiAnswer:
    """The validated parameters, or the 400 answer; never an exception."""
    try:
        return serializer.run_validation(data)
    except ValidationError as exc:
        return ApiAnswer(400, {"error": first_error(exc.detail)})
    except Exception:  # a bug: the client still hears that nothing was stored
        logger.exception("could not check the parameters of a message")
        return ApiAnswer(400, {"error": UNCHECKED})


async def send(
    data: dict, idempotency_key: str | None = None, api_key: ApiKey | None = None
) -> ApiAnswer:
    """Validate, store and (within ``wait``) see the SMSC accept a message.

    ``api_key`` (None when authentication is off) owns the message, and its
    Idempotency-Keys are its own. The message is stored with those of other
    requests in flight (``MessageIntake``), and a waiting request is told the
    SMSC's answer by its process's ``SmscAnswers``, from the worker's bell: no
    read-back, no channel of its own.

    Never raises for what a client sends (the JSON-RPC socket relies on it), and
    a message once stored is never answered with an error of ours: whatever
    fails after the commit, the answer is 202 with its id.
    """
    if (key_error := idempotency_key_error(idempotency_key)) is not None:
        return ApiAnswer(400, {"error": key_error})
    idempotency_key = scoped_idempotency_key(idempotency_key, api_key)
    if not _stored_key_fits(idempotency_key):
        return ApiAnswer(400, {"error": INVALID_IDEMPOTENCY_KEY})
    serializer = send_serializer()
    params = _validate(serializer, data)
    if isinstance(params, ApiAnswer):
        return params
    if params.get("dry_run"):
        return ApiAnswer(200, _preview(params["split"]))

    request_hash = _request_hash(data) if idempotency_key else ""
    if idempotency_key:
        try:
            answer = await in_db_thread(_replay_earlier)(idempotency_key, request_hash)
        except DatabaseError as exc:
            return _store_unavailable(exc)
        if answer is not None:
            return answer

    wait = params.get("wait", 0.0) if params.get("schedule") is None else 0.0
    answers = smsc_answers() if wait > 0 else None
    if answers is not None and not await answers.link.bound():
        answers = None  # no worker is bound: nothing will answer within the wait
    new = serializer.new_message(idempotency_key, request_hash, _owner_id(api_key), data=params)
    if answers is not None:
        try:
            new.notify_channel = await answers.prepare()
        except Exception:  # the channel layer is down: store it, answer without waiting
            logger.warning("cannot wait for the SMSC's answer", exc_info=True)
            answers = None
    try:
        message = await message_intake().store(new)
    except IntegrityError as exc:
        if not idempotency_key:
            return _store_unavailable(exc)
        # The same key raced us: answer as the first one did.
        try:
            answer = await in_db_thread(_replay_earlier)(idempotency_key, request_hash)
        except DatabaseError as again:
            return _store_unavailable(again)
        return answer or ApiAnswer(
            409, {"error": "Idempotency-Key in use by a concurrent request; retry"}
        )
    except DataError as exc:  # a value the edge let through and the store refuses
        logger.error("the store refused a message's values: %s", exc)
        return ApiAnswer(400, {"error": UNSTORABLE})
    except DatabaseError as exc:
        return _store_unavailable(exc)
    try:
        return await _answer_when_stored(message, answers, wait)
    except Exception:  # the message is stored: its id goes back, whatever failed here
        logger.exception("message %s stored, but its answer could not be made", message.pk)
        return _accepted(message)


async def _answer_when_stored(message: Message, answers, wait: float) -> ApiAnswer:
    """The answer for a stored message: at once, or once the SMSC answered, or
    as the store has it when ``wait`` ran out."""
    if answers is None:
        return answer_for(message, [None] * message.parts_count)
    answered = await answers.wait(message.pk, wait)
    if answered is None:  # no answer in time: as things stand now
        return await in_db_thread(_current_answer)(message.pk)
    _, message.state, message.command_status, smsc_ids = answered
    return answer_for(message, smsc_ids)


def _accepted(message: Message) -> ApiAnswer:
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
        },
    )


def _store_unavailable(exc: BaseException) -> ApiAnswer:
    logger.error("the message store is unavailable: %s", exc)
    return ApiAnswer(503, {"error": STORE_UNAVAILABLE})


def send_batch(
    items: object, idempotency_key: str | None = None, api_key: ApiKey | None = None
) -> ApiAnswer:
    """Validate every item as /v1/send does, store the valid ones in one
    transaction, and answer per item in order. Nothing waits for the SMSC.

    One item never fails the others: a bad one is a 400 in its place; one the
    store refuses (an Idempotency-Key taken meanwhile, a value it cannot hold)
    sends the batch to be stored item by item, each answered for itself.
    """
    if (key_error := idempotency_key_error(idempotency_key)) is not None:
        return ApiAnswer(400, {"error": key_error})
    idempotency_key = scoped_idempotency_key(idempotency_key, api_key)
    limit = settings.SMS_BATCH_MAX
    if not isinstance(items, list):
        return ApiAnswer(400, {"error": "a JSON array of send objects expected"})
    if len(items) > limit:
        return ApiAnswer(400, {"error": f"{len(items)} messages in one batch; at most {limit}"})
    keys = [f"{idempotency_key}#{i}" if idempotency_key else None for i in range(len(items))]
    if keys and not _stored_key_fits(keys[-1]):
        return ApiAnswer(400, {"error": INVALID_IDEMPOTENCY_KEY})
    try:
        earlier = (
            {m.idempotency_key: m for m in Message.objects.filter(idempotency_key__in=keys)}
            if idempotency_key
            else {}
        )
    except DatabaseError as exc:
        return _store_unavailable(exc)
    results: list[dict] = []
    accepted: list[tuple[int, NewMessage, str]] = []  # (position, message, request hash)
    serializer = send_serializer()
    owner = _owner_id(api_key)
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            results.append({"http_status": 400, "error": "a JSON object expected"})
            continue
        data = _validate(serializer, item)
        if isinstance(data, ApiAnswer):
            results.append({"http_status": data.status, **data.body})
            continue
        key = keys[position]
        request_hash = _request_hash(item) if key else ""
        if key in earlier:
            answer = _replay(earlier[key], request_hash)
            results.append({"http_status": answer.status, **answer.body})
            continue
        results.append({})
        accepted.append(
            (position, serializer.new_message(key, request_hash, owner, data=data), request_hash)
        )
    if accepted:
        try:
            stored = create_messages([new for _, new, _ in accepted])
        except (IntegrityError, DataError):
            outcomes = [_store_alone(new, request_hash) for _, new, request_hash in accepted]
        except DatabaseError as exc:
            return _store_unavailable(exc)
        else:
            outcomes = [_queued(message) for message in stored]
        for (position, _, _), outcome in zip(accepted, outcomes, strict=True):
            results[position] = outcome
        if any(r["http_status"] == 202 for r in outcomes):
            try:
                async_to_sync(ring_worker)()
            except Exception:  # stored all the same: the worker polls
                logger.warning("worker bell not rung after a batch", exc_info=True)
    rejected = sum(1 for r in results if r["http_status"] >= 400)
    return ApiAnswer(
        200, {"accepted": len(results) - rejected, "rejected": rejected, "results": results}
    )


def _queued(message: Message) -> dict:
    """A batch item's result once stored."""
    return {
        "http_status": 202,
        "id": str(message.pk),
        "message_id": None,
        "status": message.state,
        "parts": message.parts_count,
        "encoding": message.encoding,
    }


def _store_alone(new: NewMessage, request_hash: str) -> dict:
    """Store one batch item in a transaction of its own; its result, whatever happens."""
    try:
        (message,) = create_messages([new])
    except IntegrityError:
        if new.idempotency_key:  # taken by a concurrent request meanwhile: replay it
            try:
                answer = _replay_earlier(new.idempotency_key, request_hash)
            except DatabaseError as exc:
                return {"http_status": 503, "error": _store_unavailable(exc).body["error"]}
            if answer is not None:
                return {"http_status": answer.status, **answer.body}
        return {"http_status": 409, "error": "Idempotency-Key in use by a concurrent request"}
    except DataError as exc:
        logger.error("the store refused a batch item's values: %s", exc)
        return {"http_status": 400, "error": UNSTORABLE}
    except DatabaseError as exc:
        return {"http_status": 503, "error": _store_unavailable(exc).body["error"]}
    return _queued(message)


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
    smsc_id = str(params.get("message_id") or "").strip()
    our_id = str(params.get("id") or "").strip()
    if not smsc_id and not our_id:
        return ApiAnswer(400, {"error": 'missing parameter "message_id": message id from send'})
    for name, value in (("message_id", smsc_id), ("id", our_id)):
        if len(value) > SMSC_ID_MAX_LENGTH:
            error = f'invalid parameter "{name}": at most {SMSC_ID_MAX_LENGTH} characters'
            return ApiAnswer(400, {"error": error})
        if bad := _UNSTORABLE_CHARACTER.search(value):
            error = f'invalid parameter "{name}": character U+{ord(bad.group()):04X} not allowed'
            return ApiAnswer(400, {"error": error})
    message = None
    if our_id:
        if not (our_id.isascii() and our_id.isdigit()) or int(our_id) > MAX_OUR_ID:
            return ApiAnswer(404, {"error": f'message "{our_id}" not found'})
        messages = Message.objects.filter(pk=int(our_id))
        if api_key is not None:
            messages = messages.filter(api_key=api_key)
        message = messages.first()
    else:
        keys = match_keys(smsc_id)
        parts = MessagePart.objects.filter(match_key__in=keys)
        if api_key is not None:
            parts = parts.filter(message__api_key=api_key)
        # The id's own key before its reading in the other base (part_match_key_idx).
        found = {p.match_key: p for p in reversed(list(parts.select_related("message")[:20]))}
        part = next((found[key] for key in keys if key in found), None)
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
            body["message_state"] = SMPP_STATE_NAMES.get(smsc["message_state"], "UNKNOWN")
            body["final_date"] = smsc.get("final_date") or body["final_date"]
            body["error_code"] = smsc.get("error_code") or body["error_code"]
            body["source"] = "smsc"
    return ApiAnswer(200, body)


def query_body(message: Message) -> dict:
    receipt = message.receipts.order_by("-id").first()
    if receipt is not None and receipt.message_state and message.state not in FINAL_STATES:
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
