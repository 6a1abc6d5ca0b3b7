"""An ASGI application with no Django: what daphne and Twisted alone cost a
request (``bench/ceiling.py``)."""

from __future__ import annotations

import json

ANSWER = json.dumps({"http_status": 202, "id": 1, "state": "queued"}).encode()


async def bare_application(scope, receive, send) -> None:
    """Answer every HTTP request with ``ANSWER`` once its body has arrived."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        event = await receive()
        more = event.get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})
