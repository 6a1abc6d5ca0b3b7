"""One part that cannot be sent fails alone; a worker task that dies is never silent.

The worker runs in this process (its own event loop, in a thread) against the
simulator over real TCP. The poisoned rows are written through the store, as
rows already stored before the API refused such addresses, or written by other
means, would be.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections

from messaging import store
from messaging.models import Event, LinkStatus, Message, MessagePart, StateTransition
from messaging.outbound import split_for_smsc
from messaging.states import State
from smpp.session import SessionConfig
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from smpp_gateway.worker import SMPPWorker, WorkerConfig, WorkerTaskDied
from tests.conftest import wait_until

pytestmark = [pytest.mark.store, pytest.mark.django_db(transaction=True)]


class RunningWorker:
    """An ``SMPPWorker`` running in this process, on its own loop in a thread."""

    def __init__(self, port: int, worker_class: type[SMPPWorker] = SMPPWorker, **options):
        session_options = {"response_timeout": 2.0}
        session_options.update(
            (k, options.pop(k)) for k in list(options) if k in SessionConfig.__dataclass_fields__
        )
        session = SessionConfig(
            host="127.0.0.1", port=port, system_id="smsapi", password="secret", **session_options
        )
        config = WorkerConfig.from_settings(
            session=session, reconnect_delays=(0.1, 0.2, 0.5), **options
        )
        self.worker = worker_class(config)
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # what run() raised: the test looks at it
            self.error = exc
        finally:
            connections.close_all()
            loop.close()

    def start(self) -> RunningWorker:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker did not end"

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None:
            self._loop.call_soon_threadsafe(self.worker.stop)
            self.join()

    def __enter__(self) -> RunningWorker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def queue(dst: str = "4915550001", text: str = "hello", src: str = "", count: int = 1) -> list[int]:
    """Messages stored as the API stores them, whatever their addresses."""
    split = split_for_smsc(text, "gsm7")
    new = [
        store.NewMessage(dst=dst, src=src, text=text, split=split, register="final")
        for _ in range(count)
    ]
    return [m.pk for m in store.create_messages(new)]


def states(ids: list[int]) -> list[str]:
    by_id = dict(Message.objects.filter(pk__in=ids).values_list("pk", "state"))
    return [by_id[i] for i in ids]


@pytest.fixture
def smsc() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.02)) as simulator:
        yield simulator


POISONS = [
    {"dst": "Ω"},  # the issue's: non-Latin-1, killed the feed in encode("latin-1")
    {"dst": "4479\U0001f600"},  # an emoji
    {"dst": "4915550001", "src": "Zürich"},  # Latin-1, but not ASCII
    {"dst": "4" * 21},  # what the column holds, a character more than the field (was cut)
    {"dst": "4915\x00550001"},  # a NUL would end the C-string early (SQLite holds it)
]


def test_a_part_that_cannot_be_encoded_fails_alone_and_the_loop_goes_on(smsc, caplog):
    before = queue(count=3)
    storable = [f for f in POISONS if connection.vendor == "sqlite" or "\x00" not in f["dst"]]
    poisoned = [queue(**fields)[0] for fields in storable]
    long_poison = queue(dst="Ω", text="x" * 400)[0]  # three parts, each unsendable
    after = queue(count=3)
    with caplog.at_level(logging.ERROR, logger="smpp_gateway.worker"), RunningWorker(smsc.port):
        wait_until(lambda: states(before + after) == [State.DELIVERED] * 6, timeout=30)
        wait_until(lambda: set(states([*poisoned, long_poison])) == {State.FAILED}, timeout=10)
    assert smsc.stats()["submits_received"] == 6  # nothing of the poisoned ones went out
    for message_id in [*poisoned, long_poison]:
        transition = StateTransition.objects.filter(message_id=message_id).latest("id")
        assert transition.to_state == State.FAILED
        assert transition.detail.startswith("cannot be sent: ")
        assert Event.objects.filter(
            message_id=message_id, type="status", payload__state="failed"
        ).exists()
        parts = MessagePart.objects.filter(message_id=message_id)
        assert set(parts.values_list("state", "attempts")) == {(State.FAILED, 1)}
    detail = StateTransition.objects.filter(message_id=poisoned[0]).latest("id").detail
    assert "destination_addr" in detail and "ASCII" in detail
    detail = StateTransition.objects.filter(message_id=poisoned[3]).latest("id").detail
    assert "destination_addr longer than 20" in detail
    # Read as the refusal an SMSC gives such an address: /v1/send names it.
    statuses = dict(Message.objects.filter(pk__in=poisoned).values_list("pk", "command_status"))
    assert statuses[poisoned[0]] == 0x0B and statuses[poisoned[2]] == 0x0A
    logged = [r for r in caplog.records if "cannot be sent" in r.getMessage()]
    assert {r.message_id for r in logged} == {*poisoned, long_poison}


def test_the_worker_survives_a_poisoned_part_stored_while_it_runs(smsc):
    with RunningWorker(smsc.port) as running:
        first = queue()
        wait_until(lambda: states(first) == [State.DELIVERED])
        poison = queue(dst="Ω")
        wait_until(lambda: states(poison) == [State.FAILED])
        later = queue(count=5)
        wait_until(lambda: states(later) == [State.DELIVERED] * 5)
        assert running.running


class DyingWorker(SMPPWorker):
    """A worker whose query task fails once parts are in flight (a bug, say)."""

    async def _answer_queries(self, session) -> None:
        while session.in_flight == 0:
            await asyncio.sleep(0.01)
        raise RuntimeError("the query task broke")


def test_a_task_that_dies_makes_run_raise_after_handing_back_what_it_held(caplog):
    ids = queue(count=5)
    # Slow answers: the parts are in flight (sent, unanswered) when the task dies.
    config = SimulatorConfig(port=0, receipt_delay=0.02, response_delay=3.0)
    with (
        SimulatorThread(config) as smsc,
        caplog.at_level(logging.ERROR, logger="smpp_gateway.worker"),
    ):
        running = RunningWorker(smsc.port, DyingWorker, response_timeout=10.0).start()
        running.join()
    assert isinstance(running.error, WorkerTaskDied)
    assert "query answers" in str(running.error)
    assert isinstance(running.error.__cause__, RuntimeError)
    died = [r for r in caplog.records if "died" in r.getMessage()]
    assert died and died[0].exc_info is not None  # with its traceback
    # Handed back as on link loss: nothing is left in flight until its lease runs out.
    parts = MessagePart.objects.filter(message_id__in=ids)
    assert set(parts.values_list("state", "possibly_duplicated")) == {(State.QUEUED, True)}
    assert LinkStatus.objects.get().state == "failed"


def test_a_stop_is_quiet(smsc, caplog):
    with caplog.at_level(logging.ERROR, logger="smpp_gateway.worker"):
        running = RunningWorker(smsc.port).start()
        wait_until(lambda: smsc.stats()["binds"] == 1)
        running.stop()
    assert running.error is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
