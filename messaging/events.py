"""Reading the event log for the live streams (SSE and the events WebSocket).

The Event table is the record: ids rise, and a listener that remembers the last
id it sent can always continue from there. The channel layer only says "there
is something after id N"; what is sent always comes from here.

Keeping the promise "never twice, never a gap" needs one care on databases
where several transactions write events at once (PostgreSQL): ids are taken at
insert but become visible at commit, so id 11 may be visible while 10 is still
in flight. Reading past 10 would lose it for good. ``EventCursor`` therefore
stops at a hole in the ids and waits for it to fill; a hole that stays open
for ``EVENTS_GAP_GRACE`` seconds is a rolled-back (or deleted) id, and is
passed. SQLite writers hold the write lock from BEGIN to COMMIT, so ids become
visible in order there and no hole is ever waited for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import connections, router
from django.db.models import Max, Q

from messaging.event_payloads import client_view
from messaging.models import ApiKey, Event

# What the clients may filter on (``?type=``).
EVENT_TYPES = tuple(Event.Type.values)
# What a stream carries when ``?type=`` is absent: what sms-api-server's streams
# carried (receipts and incoming messages), so its clients keep working unchanged;
# ``status`` (and any later type) only when asked for.
DEFAULT_STREAM_TYPES = (Event.Type.RECEIPT.value, Event.Type.MO.value)
BATCH = 500
_EVENT_TABLE = Event._meta.db_table


def events_after(
    last_id: int,
    types: Sequence[str] | None = None,
    message_id: int | None = None,
    limit: int = BATCH,
    up_to: int | None = None,
    api_key_id: int | None = None,
    incoming: bool = True,
) -> list[Event]:
    """Events with ``last_id < id <= up_to``, oldest first, optionally filtered.

    With ``api_key_id``: only the events of that key's messages, and incoming
    messages (which belong to no key) when ``incoming``.
    """
    events = Event.objects.filter(id__gt=last_id)
    if up_to is not None:
        events = events.filter(id__lte=up_to)
    if types:
        events = events.filter(type__in=list(types))
    if message_id is not None:
        events = events.filter(message_id=message_id)
    if api_key_id is not None:
        owned = Q(message__api_key_id=api_key_id)
        if incoming:
            owned |= Q(type=Event.Type.MO, message__isnull=True)
        events = events.filter(owned)
    return list(events.order_by("id")[:limit])


def last_event_id() -> int:
    """The highest event id in the store (0 when there is none)."""
    return Event.objects.aggregate(last=Max("id"))["last"] or 0


def event_data(event: Event) -> dict:
    """The JSON object clients see for ``event``: ``event_payloads.client_view``,
    the one place every stream (SSE, WebSocket) and webhook takes it from."""
    return client_view(event.type, event.payload, event.created_at, event.pk)


def event_json(event: Event) -> str:
    """``event_data`` as compact JSON on one line (JSON escapes every newline)."""
    return json.dumps(event_data(event), ensure_ascii=False, separators=(",", ":"), default=str)


def format_sse(event: Event) -> str:
    """One SSE event block: lower-case ``id:`` and ``data:`` lines, then a blank line."""
    return f"id: {event.pk}\ndata: {event_json(event)}\n\n"


def format_sse_named(name: str, data: dict) -> str:
    """A named SSE event without an id (it leaves the client's Last-Event-ID alone)."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


@dataclass(frozen=True)
class EventFilter:
    """What one listener asked for (``?type=``, ``?id=``) and may see (its API key)."""

    types: tuple[str, ...] = ()
    message_id: int | None = None
    api_key_id: int | None = None  # set: only this key's messages
    incoming: bool = True  # with api_key_id: incoming messages too

    @property
    def empty(self) -> bool:
        return not self.types and self.message_id is None and self.api_key_id is None

    def owned_by(self, api_key: ApiKey | None) -> EventFilter:
        """This filter narrowed to what ``api_key`` may see (None: everything)."""
        if api_key is None:
            return self
        return replace(self, api_key_id=api_key.pk, incoming=api_key.receive_incoming)

    def matches(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        if self.message_id is not None and event.message_id != self.message_id:
            return False
        if self.api_key_id is None:
            return True
        if event.message_id is None:
            return self.incoming and event.type == Event.Type.MO
        return event.message.api_key_id == self.api_key_id


class InvalidParameter(ValueError):
    """A query parameter of a stream that makes no sense (a 400 for the client)."""


def parse_start(value: str | None, name: str) -> int | None:
    """An event id to resume after, or None when absent."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        raise InvalidParameter(f'invalid parameter "{name}"="{value}": an event id expected')
    return int(value)


def parse_filter(type_param: str | None, id_param: str | None) -> EventFilter:
    """``?type=receipt,mo`` and ``?id=<our message id>`` as an EventFilter.

    Without types (absent or empty): ``DEFAULT_STREAM_TYPES``.
    """
    types: list[str] = []
    for item in (type_param or "").split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item not in EVENT_TYPES:
            raise InvalidParameter(
                f'invalid parameter "type"="{item}"; supported: {", ".join(EVENT_TYPES)}'
            )
        if item not in types:
            types.append(item)
    message_id = None
    if id_param is not None and id_param.strip() != "":
        if not (id_param.strip().isascii() and id_param.strip().isdigit()):
            raise InvalidParameter(f'invalid parameter "id"="{id_param}": a message id expected')
        message_id = int(id_param.strip())
    return EventFilter(types=tuple(types) or DEFAULT_STREAM_TYPES, message_id=message_id)


def _writes_in_commit_order() -> bool:
    """Whether ids become visible in the order they were taken (see the module doc)."""
    return connections[router.db_for_read(Event)].vendor == "sqlite"


class EventCursor:
    """One listener's place in the event log: reads forward, never repeats, never skips.

    ``start=None`` means "new events only": the cursor begins at the current
    last id. Synchronous (the ORM): call ``read`` from a thread.
    """

    def __init__(
        self,
        start: int | None,
        event_filter: EventFilter | None = None,
        gap_grace: float | None = None,
    ) -> None:
        self.filter = event_filter or EventFilter()
        self.gap_grace = gap_grace if gap_grace is not None else settings.EVENTS_GAP_GRACE
        self.position: int | None = start  # the last id looked at (sent or filtered out)
        self._holes: dict[int, float] = {}  # first missing id -> when it was first seen
        # With "new only", whatever lies between the last id at start and the first
        # new one is not this listener's business: no hole is waited for there.
        self._trust_first_hole = start is None
        # True after a read that took a whole page of ids and stopped at none of them:
        # more may follow at once, even when the filter kept nothing of this page.
        self.more = False

    def begin(self) -> int:
        """Fix the starting point now (for "new only": the last id at this moment).

        Call it before telling the client it is connected, so that an event
        stored right after that is new to this listener, not history.
        """
        if self.position is None:
            self.position = last_event_id()
        return self.position

    def read(self, limit: int = BATCH) -> list[Event]:
        """The next events for this listener, in id order (possibly none).

        None with ``more`` set means a page of events this listener does not want
        (status events on a receipt stream): read on rather than wait for a bell.
        """
        self.begin()
        if self.filter.empty:
            rows = events_after(self.position, limit=limit)
            upto = self._safe_upto([row.pk for row in rows])
            events = [row for row in rows if row.pk <= upto]
            self.position = max(self.position, upto)
            self.more = len(rows) == limit and upto == rows[-1].pk
            return events
        after, upto = self.advance(limit)
        if upto == after:
            return []
        return events_after(
            after,
            types=self.filter.types,
            message_id=self.filter.message_id,
            limit=limit,
            up_to=upto,
            api_key_id=self.filter.api_key_id,
            incoming=self.filter.incoming,
        )

    def advance(self, limit: int = BATCH) -> tuple[int, int]:
        """Move past the next ids (``limit`` at most) that are safe to read; returns
        ``(after, upto)``: read ``after < id <= upto`` (nothing when they are equal).

        For a reader that wants a few columns or a join of its own rather than
        whole events (the webhook planner): only the ids are read here.
        """
        after = self.begin()
        with connections[router.db_for_read(Event)].cursor() as cursor:
            # Plain SQL: a planner round is a few such reads, and the ORM's query
            # building cost more than the read itself.
            cursor.execute(
                f"SELECT id FROM {_EVENT_TABLE} WHERE id > %s ORDER BY id LIMIT %s", [after, limit]
            )
            ids = [row[0] for row in cursor.fetchall()]
        self.position = max(after, self._safe_upto(ids))
        self.more = len(ids) == limit and self.position == ids[-1]
        return after, self.position

    def _safe_upto(self, ids: Iterable[int]) -> int:
        """The highest id up to which every id is either here or known to be gone."""
        upto = self.position or 0
        strict = not _writes_in_commit_order()
        for event_id in ids:
            if event_id != upto + 1 and strict and not self._hole_closed(upto + 1):
                break
            upto = event_id
            self._trust_first_hole = False
        self._holes = {start: seen for start, seen in self._holes.items() if start > upto}
        return upto

    def _hole_closed(self, first_missing: int) -> bool:
        if self._trust_first_hole:
            return True
        now = time.monotonic()
        seen = self._holes.setdefault(first_missing, now)
        return now - seen >= self.gap_grace
