"""Query: the delivery state of a message, by the SMSC's id or ours, as the HTTP
API (``/v1/query``) and the JSON-RPC socket (``SM.Query``) both offer it.

Protocol-free, like ``messaging.api.sending``; synchronous (run it on a thread):
without a final receipt it may ask the SMSC itself (``query_sm``) and wait.
"""

from __future__ import annotations

import re

from asgiref.sync import async_to_sync
from django.conf import settings

from messaging.api.answers import ApiAnswer
from messaging.api.serializers import TransitionSerializer
from messaging.models import ApiKey, Message, MessagePart
from messaging.notify import ask_smsc
from messaging.states import FINAL_STATES, SMPP_STATE_NAMES, smpp_state_name
from smpp.smsc_ids import SMSC_ID_MAX_LENGTH, match_keys

# Ids the store can look up: our ids are 64-bit, the SMSC's are text.
MAX_OUR_ID = 2**63 - 1
# Control characters, and lone surrogates (a JSON body's "\ud800": no store can hold one).
_UNSTORABLE_CHARACTER = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


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
        # The SMSC that gave the id is the one to ask: the connector that took the part.
        connector = message.parts.order_by("index").values_list("connector", flat=True)[0]
        smsc = async_to_sync(ask_smsc)(
            {
                "message_id": first_id,
                "src": message.src,
                "src_ton": message.src_ton,
                "src_npi": message.src_npi,
            },
            settings.SMPP_QUERY_TIMEOUT,
            connector,
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
