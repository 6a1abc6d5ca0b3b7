"""Planning webhooks: the event log read after the shared cursor, one
``WebhookDelivery`` per event and receiver (step 1 of ``messaging.webhooks.delivery``).

Who gets what (see docs/webhooks.md): a message's receipts and final status
events go to its ``callback_url``, else its API key's ``default_callback_url``;
incoming messages go to the default URL of every key that receives them and to
``WEBHOOK_INCOMING_URL``.
"""

from __future__ import annotations

import functools
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging.events import EventCursor
from messaging.models import ApiKey, Event, Message, WebhookCursor, WebhookDelivery
from messaging.states import FINAL_STATES
from messaging.store.backends import Sql
from messaging.url_secrets import redact_url

CURSOR_NAME = "webhooks"  # the WebhookCursor row (made by the migration)


@functools.cache
def planning_sql(backend: type[Sql]) -> dict[str, str]:
    """The planner's statements: each round runs them all, and building them with
    the ORM cost more than running them (a round, ~65 events under load, took
    2-5 ms of CPU, nearly all of it in Django's query compiler)."""
    event, message, key = (m._meta.db_table for m in (Event, Message, ApiKey))
    cursor = WebhookCursor._meta.db_table
    state = backend.json_text("e.payload", "state")
    final = ", ".join(f"'{value}'" for value in sorted(FINAL_STATES))
    return {
        "new_events": f"SELECT 1 FROM {event} WHERE id > COALESCE("
        f"(SELECT last_event_id FROM {cursor} WHERE name = %s), -1) LIMIT 1",
        "lock_cursor": f"SELECT id, last_event_id FROM {cursor} WHERE name = %s"
        + backend.for_update,
        "move_cursor": f"UPDATE {cursor} SET last_event_id = %s, updated_at = %s WHERE id = %s",
        # Receipts and final status events of messages with a URL, every incoming message.
        "webhook_events": f"SELECT e.id, e.type, m.callback_url, k.default_callback_url, "
        f"m.api_key_id FROM {event} e "
        f"LEFT JOIN {message} m ON m.id = e.message_id "
        f"LEFT JOIN {key} k ON k.id = m.api_key_id "
        f"WHERE e.id > %s AND e.id <= %s AND (e.type = '{Event.Type.MO}' OR ("
        f"(m.callback_url <> '' OR k.default_callback_url <> '') AND (e.type = "
        f"'{Event.Type.RECEIPT}' OR (e.type = '{Event.Type.STATUS}' AND {state} IN ({final})))"
        f")) ORDER BY e.id",
    }


def webhook_events(sql: Sql, after: int, upto: int) -> list[tuple[int, str, str, int | None]]:
    """``(event id, type, url, api key id)`` of the events ``after < id <= upto``
    that call for a webhook, in id order; for incoming messages url and key are
    empty (they go to every receiving key: ``incoming_receivers``).

    Receipts and final status events go to their message's ``callback_url``,
    else its key's default; without either, nowhere. Most events call for
    nothing, and the payloads are not read: reading every event whole was most
    of the planner's time.
    """
    rows = sql.execute(planning_sql(type(sql))["webhook_events"], (after, upto))
    return [
        (pk, type_, "", None) if type_ == Event.Type.MO else (pk, type_, own or default, key_id)
        for pk, type_, own, default, key_id in rows
    ]


def incoming_receivers() -> list[tuple[str, int | None]]:
    """``(url, api key id)`` of everyone an incoming message is posted to."""
    receivers: list[tuple[str, int | None]] = [
        (url, key_id)
        for key_id, url in ApiKey.objects.filter(receive_incoming=True, revoked_at__isnull=True)
        .exclude(default_callback_url="")
        .order_by("id")
        .values_list("id", "default_callback_url")
    ]
    if settings.WEBHOOK_INCOMING_URL:
        # Stored with each delivery: like a client's URL, never with an API key in it.
        receivers.append((redact_url(settings.WEBHOOK_INCOMING_URL), None))
    return receivers


def plan_deliveries(sql: Sql, after: int, upto: int, now: datetime) -> list[WebhookDelivery]:
    """The deliveries the events ``after < id <= upto`` call for (unsaved), in event order."""
    events = webhook_events(sql, after, upto)
    incoming = incoming_receivers() if any(e[1] == Event.Type.MO for e in events) else []
    deliveries = []
    for event_id, type_, url, key_id in events:
        receivers = incoming if type_ == Event.Type.MO else [(url, key_id)]
        deliveries.extend(
            WebhookDelivery(
                event_id=event_id, api_key_id=key_id, url=url, next_attempt_at=now, created_at=now
            )
            for url, key_id in receivers
        )
    return deliveries


class Planner:
    """Moves the shared cursor over the event log and creates the deliveries.

    Keeps one ``EventCursor`` for its sender's life, so that a hole in the ids
    (PostgreSQL: a transaction not yet committed) is waited for, as the live
    streams do, rather than skipped. Synchronous: call it from a thread.
    """

    def __init__(self) -> None:
        self.cursor: EventCursor | None = None

    def plan(self, limit: int = 500) -> int:
        """Plan the next events (up to ``limit``); returns how far the cursor moved
        (in ids: ``limit`` or more when there may be more to read)."""
        now = timezone.now()
        with Sql() as sql:
            statements = planning_sql(type(sql))
            if not sql.execute(statements["new_events"], (CURSOR_NAME,)):
                # Nothing new: no transaction (on SQLite each one takes the write lock).
                return 0
        with transaction.atomic(), Sql() as sql:
            rows = sql.execute(statements["lock_cursor"], (CURSOR_NAME,))
            if not rows:  # the migration makes it; if it is gone, start with new events
                self.cursor = EventCursor(None)
                WebhookCursor.objects.create(
                    name=CURSOR_NAME, last_event_id=self.cursor.begin(), updated_at=now
                )
                return 0
            pk, position = rows[0]
            if self.cursor is None:
                self.cursor = EventCursor(position)
            else:  # another sender may have moved it on
                self.cursor.position = position
            after, upto = self.cursor.advance(limit)
            if upto == position:
                return 0
            WebhookDelivery.objects.bulk_create(plan_deliveries(sql, after, upto, now))
            sql.execute(statements["move_cursor"], (upto, sql.dt(now), pk))
        return upto - after
