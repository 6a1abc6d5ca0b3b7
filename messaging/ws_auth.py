"""API keys on the WebSocket routes: an ASGI middleware around the URL router.

The key comes as ``Authorization: Bearer <key>`` or, since a browser's
WebSocket cannot set headers, as ``?api_key=<key>``. A good key is put in the
scope as ``scope["api_key"]`` (None when SMSAPI_AUTH=off) for the consumers.

Without a good key the handshake is accepted and the socket closed at once
with code 4401 (like HTTP 401) and the reason as close reason, before anything
is sent. Accepting first lets a browser see the code in its close event; a
refused handshake only ever shows it as 1006. (daphne does not pass the reason
on; the code is the contract.)
"""

from __future__ import annotations

from urllib.parse import parse_qs

from . import api_keys
from .events import in_db_thread

CLOSE_UNAUTHORIZED = 4401


class ApiKeyMiddleware:
    """Checks the key of every WebSocket connection before the consumer sees it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        if not api_keys.auth_required():
            return await self.app({**scope, "api_key": None}, receive, send)
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        query_key = (query.get("api_key") or [None])[0]
        try:
            api_key = await in_db_thread(api_keys.authenticate)(authorization, query_key)
        except api_keys.KeyRejected as exc:
            await self.refuse(receive, send, str(exc))
            return None
        return await self.app({**scope, "api_key": api_key}, receive, send)

    @staticmethod
    async def refuse(receive, send, reason: str) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": reason[:120]})
