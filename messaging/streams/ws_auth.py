"""API keys on open connections: checked when a WebSocket opens, and watched
while it (or an SSE stream) stays open.

The key comes as ``Authorization: Bearer <key>`` or, since a browser's
WebSocket cannot set headers, as ``?api_key=<key>``. A good key is put in the
scope as ``scope["api_key"]`` (None when SMSAPI_AUTH=off) for the consumers.

Without a good key the handshake is accepted and the socket closed at once
with code 4401 (like HTTP 401) and the reason as close reason, before anything
is sent. Accepting first lets a browser see the code in its close event; a
refused handshake only ever shows it as 1006. (daphne does not pass the reason
on; the code is the contract.)

A key revoked while its sockets and streams are open stops them within
``KEY_RECHECK_INTERVAL`` seconds (plus one poll of the stream): ``KeyWatch``
asks the store once per interval, for every open connection of the process at
once, which of their keys are revoked, and tells the connections of those keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

from django.conf import settings

from messaging import api_keys
from messaging.models import ApiKey
from messaging.orm_thread import in_db_thread
from messaging.per_event_loop import PerEventLoop

logger = logging.getLogger(__name__)

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


class KeyWatch:
    """One open connection's watch on its key: ``revoked`` is set (and
    ``on_revoked`` called) once the key is revoked. ``close()`` when it ends."""

    def __init__(
        self, watcher: RevocationWatcher, key_id: int, on_revoked: Callable[[], None] | None
    ) -> None:
        self.watcher = watcher
        self.key_id = key_id
        self.on_revoked = on_revoked
        self.revoked = asyncio.Event()

    def fire(self) -> None:
        if self.revoked.is_set():
            return
        self.revoked.set()
        if self.on_revoked is not None:
            try:
                self.on_revoked()
            except Exception:
                logger.exception("reacting to a revoked key failed")

    def close(self) -> None:
        self.watcher.forget(self)


class RevocationWatcher:
    """The keys of one event loop's open connections, checked together: one
    query every ``KEY_RECHECK_INTERVAL`` seconds while any is open, none otherwise."""

    def __init__(self) -> None:
        self.watches: dict[int, set[KeyWatch]] = {}
        self.task: asyncio.Task | None = None

    def watch(self, api_key: ApiKey, on_revoked: Callable[[], None] | None) -> KeyWatch:
        watch = KeyWatch(self, api_key.pk, on_revoked)
        self.watches.setdefault(api_key.pk, set()).add(watch)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        return watch

    def forget(self, watch: KeyWatch) -> None:
        watches = self.watches.get(watch.key_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self.watches[watch.key_id]

    async def run(self) -> None:
        check = in_db_thread(api_keys.revoked_among)
        while self.watches:
            await asyncio.sleep(settings.KEY_RECHECK_INTERVAL)
            if not self.watches:
                break
            try:
                revoked = await check(list(self.watches))
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is down: the connections go on, checked later
                logger.warning("could not check the keys of open connections", exc_info=True)
                continue
            for key_id in revoked:
                for watch in list(self.watches.pop(key_id, ())):
                    watch.fire()
        self.task = None


_watchers: PerEventLoop[RevocationWatcher] = PerEventLoop(RevocationWatcher)


def watch_key(
    api_key: ApiKey | None, on_revoked: Callable[[], None] | None = None
) -> KeyWatch | None:
    """Watch ``api_key`` for revocation while a connection is open (None: no key)."""
    if api_key is None:
        return None
    return _watchers.get().watch(api_key, on_revoked)


def stop_watching(watch: KeyWatch | None) -> None:
    if watch is not None:
        with contextlib.suppress(Exception):
            watch.close()
