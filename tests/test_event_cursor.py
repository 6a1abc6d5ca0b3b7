"""A filtered stream reads on past pages it wants nothing of.

(Holes in the ids are not the subject here: ``gap_grace=0``; tests/test_sse.py has them.)

The default streams carry receipts and incoming messages only, while most of the
log is status events. A page of status events must not make a stream wait for the
next bell (or poll): at thousands of messages a second that turned receipts into a
trickle (the e2e bench: 36,800 of 50,000 receipts in four minutes).
"""

from __future__ import annotations

import pytest

from messaging.events import DEFAULT_STREAM_TYPES, EventCursor, EventFilter, last_event_id
from tests.live import WsClient, add_events, daphne, make_message
from tests.test_sse import NEVER, REDIS_URL, connect, redis_available, redis_layer  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.store]


def test_a_page_filtered_out_says_more_and_the_next_read_finds_the_receipt():
    message = make_message()
    start = last_event_id()
    add_events(150, "status", message, ring=False)
    (receipt,) = add_events(1, "receipt", message, ring=False)
    cursor = EventCursor(start, EventFilter(types=DEFAULT_STREAM_TYPES), gap_grace=0)

    assert cursor.read(100) == []
    assert cursor.more  # 100 status events: more may be right behind
    assert [event.pk for event in cursor.read(100)] == [receipt]
    assert not cursor.more
    assert cursor.read(100) == []
    assert not cursor.more  # the end of the log: wait for a bell


def test_unfiltered_reads_say_more_only_after_a_full_page():
    start = last_event_id()
    add_events(5, "mo", ring=False)
    cursor = EventCursor(start, gap_grace=0)
    assert len(cursor.read(5)) == 5 and cursor.more
    assert cursor.read(5) == [] and not cursor.more


@pytest.fixture(scope="module")
def quiet_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne on Redis with polling and keep-alive off: only bells wake its streams."""
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    env = {"REDIS_URL": REDIS_URL, "EVENTS_POLL_INTERVAL": NEVER, "SSE_KEEPALIVE": NEVER}
    with django_db_blocker.unblock(), daphne(tmp_path_factory.mktemp("cursor"), **env) as s:
        yield s


def test_default_streams_get_receipts_behind_many_status_events(quiet_server, redis_layer):  # noqa: F811
    """One bell for 1,000 status events and then 10 receipts: both default streams
    get the 10 receipts without another bell (there is none: polling is off)."""
    message = make_message()
    sse = connect(quiet_server, "/v1/sse")
    ws = WsClient(quiet_server.port, "/v1/ws/jsonrpc/events")
    try:
        add_events(1000, "status", message, ring=False)
        receipts = add_events(10, "receipt", message)  # rings once, after commit
        assert [int(event.id) for event in sse.events(10)] == receipts
        from_ws = []
        for call_id in range(10):
            call = ws.receive_json()
            from_ws.append(call["params"][0]["event_id"])
            ws.send_json({"id": call_id, "result": True, "error": None})
        assert from_ws == receipts
    finally:
        sse.close()
        ws.close()
