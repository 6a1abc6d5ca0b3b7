"""Posting one webhook: signed with HMAC-SHA256, bounded in time, and turned
into an ``AttemptResult`` whatever happens (step 3 of ``messaging.webhooks.delivery``).

Only addresses the policy allows are connected to (``messaging.webhooks.targets``,
enforced on the address connected to by ``messaging.webhooks.transport``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import httpx
from django.utils import timezone

from messaging.url_secrets import loggable_url
from messaging.webhooks.attempts import EXCERPT_BYTES, AttemptResult, Outgoing
from messaging.webhooks.targets import DestinationRefused

SIGNATURE_HEADER = "X-SMSAPI-Signature"
EVENT_ID_HEADER = "X-SMSAPI-Event-Id"
USER_AGENT = "smsapi-webhooks/1"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-SMSAPI-Signature`` value: ``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``.

    The timestamp is signed with the body so that a receiver can refuse an old
    request played again (docs/webhooks.md shows the check).
    """
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def post(client: httpx.AsyncClient, outgoing: Outgoing, timeout: float) -> AttemptResult:
    """POST one delivery; any answer or failure becomes an ``AttemptResult`` (never raises)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: str(outgoing.event_id),
        "X-SMSAPI-Event-Type": outgoing.event_type,
        "X-SMSAPI-Delivery-Attempt": str(outgoing.attempt),
    }
    if outgoing.secret:
        headers[SIGNATURE_HEADER] = sign(outgoing.secret, outgoing.body, int(time.time()))
    at = timezone.now()
    started = time.monotonic()
    status_code = None
    error = ""
    final = False
    excerpt = b""
    try:
        # A total bound: httpx's timeout is per read, a trickling receiver could go on.
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", outgoing.url, content=outgoing.body, headers=headers
            ) as response:
                status_code = response.status_code
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_BYTES:
                        break
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except DestinationRefused as exc:  # the address policy: nothing was sent
        error, final = str(exc), exc.permanent
    except Exception as exc:  # connection refused, TLS, bad URL...: tried again later
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if status_code is not None and error:
        error = ""  # the status came; only the (optional) body was cut short
    return AttemptResult(
        delivery_id=outgoing.delivery_id,
        at=at,
        status_code=status_code,
        error=loggable_url(error),
        duration_ms=int((time.monotonic() - started) * 1000),
        excerpt=excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"),
        final=final,
    )
