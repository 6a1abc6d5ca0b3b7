"""Send, as the HTTP API (one message or a batch) and the JSON-RPC socket offer it.

Protocol-free: takes the request's parameters, returns the HTTP status and the
JSON body. The views and the WebSocket consumer only translate. What a client is
told about a stored message is ``messaging.api.answers``; query is
``messaging.api.querying``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError
from rest_framework.exceptions import ValidationError

from messaging.api.answers import (
    ApiAnswer,
    accepted,
    answer_for,
    replay,
    replay_earlier,
    smsc_ids_of,
)
from messaging.api.errors import STORE_UNAVAILABLE, first_error
from messaging.api.intake import message_intake
from messaging.api.serializers import SendSerializer, checked_split, send_serializer
from messaging.api.smsc_answers import SmscAnswers, smsc_answers
from messaging.api_keys import scoped_idempotency_key
from messaging.connectors import RoutingState, Unroutable, gateway_alphabet, routing_cache
from messaging.models import ApiKey, Message
from messaging.notify import ring_worker
from messaging.orm_thread import in_db_thread
from messaging.routing import MessageFacts, public_name
from messaging.store import NewMessage, create_messages

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

# A bug met while checking one message: logged with its traceback; the client is
# told its message was refused (nothing was stored), never a 500.
UNCHECKED = "the parameters could not be checked (logged on the server); nothing was stored"
UNSTORABLE = "the message store cannot hold these parameters; nothing was stored"


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
    checked = _checked_request(data, idempotency_key, api_key)
    if isinstance(checked, ApiAnswer):
        return checked
    serializer, params, idempotency_key = checked
    if params.get("dry_run"):
        return await _dry_run(serializer, params, idempotency_key, api_key)
    request_hash = _request_hash(data) if idempotency_key else ""
    if idempotency_key:
        try:
            answer = await in_db_thread(replay_earlier)(idempotency_key, request_hash)
        except DatabaseError as exc:
            return _store_unavailable(exc)
        if answer is not None:
            return answer

    wait = params.get("wait", 0.0) if params.get("schedule") is None else 0.0
    answers = await _smsc_answers_within(wait)
    new = serializer.new_message(idempotency_key, request_hash, _owner_id(api_key), data=params)
    if (refusal := await _route_now(new)) is not None:
        return refusal
    if answers is not None:
        try:
            new.notify_channel = await answers.prepare()
        except Exception:  # the channel layer is down: store it, answer without waiting
            logger.warning("cannot wait for the SMSC's answer", exc_info=True)
            answers = None
    message = await _store(new, request_hash)
    if isinstance(message, ApiAnswer):
        return message
    try:
        return await _answer_when_stored(message, answers, wait)
    except Exception:  # the message is stored: its id goes back, whatever failed here
        logger.exception("message %s stored, but its answer could not be made", message.pk)
        return accepted(message)


def _checked_request(
    data: dict, idempotency_key: str | None, api_key: ApiKey | None
) -> tuple[SendSerializer, dict, str | None] | ApiAnswer:
    """The serializer, the validated parameters and the key's own Idempotency-Key;
    or the 400 already due."""
    if (key_error := idempotency_key_error(idempotency_key)) is not None:
        return ApiAnswer(400, {"error": key_error})
    idempotency_key = scoped_idempotency_key(idempotency_key, api_key)
    if not _stored_key_fits(idempotency_key):
        return ApiAnswer(400, {"error": INVALID_IDEMPOTENCY_KEY})
    serializer = send_serializer()
    params = _validate(serializer, data)
    if isinstance(params, ApiAnswer):
        return params
    return serializer, params, idempotency_key


async def _dry_run(
    serializer: SendSerializer, params: dict, idempotency_key: str | None, api_key: ApiKey | None
) -> ApiAnswer:
    """The cost preview: the message routed (a weighted split drawn as the same
    Idempotency-Key would draw it) and encoded as it would be now, or the 400 it
    would get; nothing stored."""
    new = serializer.new_message(idempotency_key, "", _owner_id(api_key), data=params)
    if (refusal := await _route_now(new)) is not None:
        return refusal
    return ApiAnswer(200, {**_preview(new.split), "connector": public_name(new.connector)})


async def _smsc_answers_within(wait: float) -> SmscAnswers | None:
    """Where to hear the SMSC's answer within ``wait`` seconds; None: answer at once."""
    answers = smsc_answers() if wait > 0 else None
    if answers is not None and not await answers.link.bound():
        return None  # no worker is bound: nothing will answer within the wait
    return answers


async def _store(new: NewMessage, request_hash: str) -> Message | ApiAnswer:
    """The message stored; or the answer when the store would not (a replay when
    the same Idempotency-Key raced us, else 400 or 503)."""
    idempotency_key = new.idempotency_key
    try:
        return await message_intake().store(new)
    except IntegrityError as exc:
        if not idempotency_key:
            return _store_unavailable(exc)
        # The same key raced us: answer as the first one did.
        try:
            answer = await in_db_thread(replay_earlier)(idempotency_key, request_hash)
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


async def _route_now(new: NewMessage) -> ApiAnswer | None:
    """``_route`` with the routing state of the moment; the 503 when the store
    cannot tell it (and this process has none yet)."""
    try:
        routing_state = await routing_cache.aget()
    except DatabaseError as exc:
        return _store_unavailable(exc)
    return _route(new, routing_state)


def _route(new: NewMessage, state: RoutingState) -> ApiAnswer | None:
    """Choose the connector ``new`` goes through (``new.connector``); the 400 when
    no route takes it. The weighted split draws with the Idempotency-Key when there
    is one (a retry draws alike), else at random. A connector whose SMSC reads
    data_coding 0 otherwise than the gateway gets the text encoded for it."""
    facts = MessageFacts(new.dst, new.src, new.api_key_id)
    try:
        choice = state.choose(facts, new.idempotency_key or secrets.token_hex(8))
    except Unroutable as exc:
        return ApiAnswer(
            400, {"error": f'{exc} (to "{new.dst}", from "{new.src}"); nothing was stored'}
        )
    new.connector = choice.connector
    alphabet = state.alphabet_of(choice.connector)
    if alphabet != gateway_alphabet():
        try:
            new.split = checked_split(new.text, new.requested_encoding, alphabet)
        except ValidationError as exc:
            where = f'connector "{public_name(choice.connector)}" reads data_coding 0 as {alphabet}'
            return ApiAnswer(400, {"error": f"{first_error(exc.detail)} ({where})"})
    return None


def _store_unavailable(exc: BaseException) -> ApiAnswer:
    logger.error("the message store is unavailable: %s", exc)
    return ApiAnswer(503, {"error": STORE_UNAVAILABLE})


# --- batches -------------------------------------------------------------------------------


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
    try:
        routing_state = routing_cache.get()
    except DatabaseError as exc:
        return _store_unavailable(exc)
    results, new_items = _sort_items(items, keys, earlier, _owner_id(api_key), routing_state)
    if new_items:
        try:
            outcomes = _store_items(new_items)
        except DatabaseError as exc:
            return _store_unavailable(exc)
        for (position, _, _), outcome in zip(new_items, outcomes, strict=True):
            results[position] = outcome
    rejected = sum(1 for r in results if r["http_status"] >= 400)
    return ApiAnswer(
        200, {"accepted": len(results) - rejected, "rejected": rejected, "results": results}
    )


# (position in the batch, the message to store, its request hash)
_NewItem = tuple[int, NewMessage, str]


def _sort_items(
    items: list,
    keys: list[str | None],
    earlier: dict[str, Message],
    owner: int | None,
    routing_state: RoutingState,
) -> tuple[list[dict], list[_NewItem]]:
    """Each item's result where it is known already (refused, or replayed for an
    Idempotency-Key used before; an empty dict in its place otherwise), and the
    items to store."""
    results: list[dict] = []
    new_items: list[_NewItem] = []
    serializer = send_serializer()
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
            answer = replay(earlier[key], request_hash)
            results.append({"http_status": answer.status, **answer.body})
            continue
        new = serializer.new_message(key, request_hash, owner, data=data)
        if (refusal := _route(new, routing_state)) is not None:
            results.append({"http_status": refusal.status, **refusal.body})
            continue
        results.append({})
        new_items.append((position, new, request_hash))
    return results, new_items


def _store_items(new_items: list[_NewItem]) -> list[dict]:
    """Store the items in one transaction (item by item if the store refuses one);
    their results in order. The worker's bell is rung when any was stored."""
    try:
        stored = create_messages([new for _, new, _ in new_items])
    except (IntegrityError, DataError):
        outcomes = [_store_alone(new, request_hash) for _, new, request_hash in new_items]
    else:
        outcomes = [_queued(message) for message in stored]
    if any(r["http_status"] == 202 for r in outcomes):
        try:
            async_to_sync(ring_worker)()
        except Exception:  # stored all the same: the worker polls
            logger.warning("worker bell not rung after a batch", exc_info=True)
    return outcomes


def _queued(message: Message) -> dict:
    """A batch item's result once stored."""
    return {
        "http_status": 202,
        "id": str(message.pk),
        "message_id": None,
        "status": message.state,
        "parts": message.parts_count,
        "encoding": message.encoding,
        "connector": public_name(message.connector),
    }


def _store_alone(new: NewMessage, request_hash: str) -> dict:
    """Store one batch item in a transaction of its own; its result, whatever happens."""
    try:
        (message,) = create_messages([new])
    except IntegrityError:
        if new.idempotency_key:  # taken by a concurrent request meanwhile: replay it
            try:
                answer = replay_earlier(new.idempotency_key, request_hash)
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


def _current_answer(message_id: int) -> ApiAnswer:
    """The /v1/send answer for a stored message, as things stand now (reads the store)."""
    message = Message.objects.get(pk=message_id)
    return answer_for(message, smsc_ids_of(message))


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
