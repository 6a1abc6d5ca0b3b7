"""Supervision: a long-lived task that dies is logged, turns readiness 503 and
makes its process exit non-zero; a requested stop still exits 0.

The rule itself (``messaging.supervision``) runs here with real asyncio tasks
that raise; the three commands run as real processes whose tasks die for real:
a worker whose store has no tables, the simulator's or daphne's port already
taken, and ``SMSAPI_TEST_TASK_DEATH_FILE`` (a test-only setting: the process
runs one more task, which raises when the test creates that file) while the
worker is bound and busy.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from messaging import store
from messaging.models import LinkStatus
from messaging.outbound import split_for_smsc
from messaging.store import NewMessage
from messaging.supervision import (
    EXIT_TASK_DIED,
    LongLivedTask,
    Supervisor,
    clear_not_ready,
    mark_not_ready,
    not_ready_reason,
    run_supervised,
)
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import ROOT, free_port, wait_until
from tests.live import database_url


@pytest.fixture(autouse=True)
def _fresh_verdict():
    clear_not_ready()
    yield
    clear_not_ready()


# --- the rule, with real tasks ------------------------------------------------------------


class Sleeper:
    """A well-behaved long-lived task: runs until asked to stop, then ends cleanly."""

    def __init__(self, linger: float = 0.0) -> None:
        self.stopping = asyncio.Event()
        self.linger = linger  # seconds it takes to end once asked (a drain)
        self.ended_cleanly = False

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        await self.stopping.wait()
        await asyncio.sleep(self.linger)
        self.ended_cleanly = True


async def crash_after(delay: float) -> None:
    await asyncio.sleep(delay)
    raise RuntimeError("the feed broke: 'latin-1' codec can't encode character")


async def test_a_task_that_raises_is_logged_marks_not_ready_and_stops_the_others(caplog):
    sleeper = Sleeper(linger=0.05)
    with caplog.at_level(logging.CRITICAL, logger="messaging.supervision"):
        code = await run_supervised(
            "test",
            [
                LongLivedTask("sleeper", sleeper.run, stop=sleeper.stop),
                LongLivedTask("feed", lambda: crash_after(0.05)),
            ],
        )
    assert code == EXIT_TASK_DIED != 0
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "task feed died" in record.getMessage()
    assert record.exc_info and "latin-1" in str(record.exc_info[1])
    assert "crash_after" in caplog.text  # the traceback, down to the function that raised
    assert "feed" in not_ready_reason()
    assert sleeper.ended_cleanly  # stopped the clean way, not cancelled


async def test_a_task_that_returns_when_it_should_not_counts_as_dead(caplog):
    async def returns_early() -> None:
        await asyncio.sleep(0.01)

    sleeper = Sleeper()
    code = await run_supervised(
        "test",
        [
            LongLivedTask("sleeper", sleeper.run, stop=sleeper.stop),
            LongLivedTask("early", returns_early),
        ],
    )
    assert code == EXIT_TASK_DIED
    assert "returned while the process runs" in caplog.text
    assert sleeper.ended_cleanly


async def test_sigterm_is_a_clean_stop_and_one_shot_tasks_may_end():
    sleeper = Sleeper(linger=0.05)

    async def one_shot() -> None:  # like the simulator's start: returns once listening
        await asyncio.sleep(0)

    asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
    code = await run_supervised(
        "test",
        [
            LongLivedTask("sleeper", sleeper.run, stop=sleeper.stop),
            LongLivedTask("start", one_shot, may_end=True),
        ],
    )
    assert code == 0
    assert not_ready_reason() is None
    assert sleeper.ended_cleanly


async def test_a_task_that_does_not_stop_in_time_is_cancelled(caplog):
    stubborn_cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stubborn_cancelled.set()
            raise

    supervisor = Supervisor("test")
    supervisor.start_all(
        [
            LongLivedTask("stubborn", stubborn, stop=lambda: None, stop_timeout=0.1),
            LongLivedTask("feed", lambda: crash_after(0.01)),
        ]
    )
    await asyncio.wait_for(supervisor.wait(), 5)
    await asyncio.wait_for(supervisor.stop_all(), 5)
    assert stubborn_cancelled.is_set()
    assert "did not stop within 0.1 s" in caplog.text
    assert supervisor.exit_code == EXIT_TASK_DIED


# --- readiness of a process whose task died --------------------------------------------


@pytest.mark.store
@pytest.mark.django_db(transaction=True)  # the readiness check reads on a thread of its own
def test_readiness_is_503_at_once_when_a_task_of_the_process_died(client):
    now = timezone.now()
    LinkStatus.objects.create(
        worker_id="w1", state="bound", smsc="x", changed_at=now, heartbeat_at=now
    )
    assert client.get("/readyz").status_code == 200
    mark_not_ready("this process is stopping: task smpp-worker of serve died (OSError)")
    for response in (client.get("/readyz"), client.get("/healthz", {"ready": "1"})):
        assert response.status_code == 503
        body = response.json()
        assert body["checks"] == {"process": "failed"}
        assert "smpp-worker" in body["error"]
    assert client.get("/healthz").status_code == 200  # liveness is not readiness


# --- the commands, as processes ------------------------------------------------------------


class Command:
    """``manage.py <name>`` in its own process, its output in a file."""

    def __init__(self, tmp_path: Path, *args: str, **env: str) -> None:
        self.log_path = tmp_path / f"{args[0]}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={
                **os.environ,
                "SMSAPI_DATA_DIR": str(tmp_path),
                "PYTHONUNBUFFERED": "1",
                "LOG_FORMAT": "text",
                **env,
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running after {timeout} s:\n{self.output()}")
        finally:
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def get_json(port: int, path: str) -> tuple[int, dict] | None:
    """(status, body) of a GET, or None when nothing answers."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        status, raw = response.status, response.read()
        conn.close()
    except OSError:
        return None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"raw": raw[:200].decode(errors="replace")}


def assert_died_loudly(command: Command, task: str, cause: str) -> str:
    code = command.wait()
    output = command.output()
    assert code == EXIT_TASK_DIED, output
    assert "CRITICAL messaging.supervision" in output and f"task {task} died" in output, output
    assert "Traceback (most recent call last)" in output and cause in output, output
    return output


def test_a_worker_whose_run_raises_exits_70_with_its_traceback(tmp_path):
    """A store without tables: the worker's first store call raises inside ``run()``."""
    worker = Command(
        tmp_path,
        "smpp_worker",
        DATABASE_URL=f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}",
        SMPP_ADDR=f"127.0.0.1:{free_port()}",
    )
    assert_died_loudly(worker, "smpp-worker", "no such table")


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_a_dying_task_stops_a_bound_worker_cleanly_and_exits_70(tmp_path, simulator):
    trigger = tmp_path / "die"
    worker = Command(
        tmp_path,
        "smpp_worker",
        DATABASE_URL=database_url(),
        SMPP_ADDR=f"127.0.0.1:{simulator.port}",
        SMSAPI_TEST_TASK_DEATH_FILE=str(trigger),
    )
    try:
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists(), timeout=30)
        trigger.touch()
        output = assert_died_loudly(worker, "test-task-death", "InjectedTaskDeath")
    finally:
        worker.kill()
    # The worker was stopped as on SIGTERM: it unbound and said so.
    assert simulator.stats()["unbinds_received"] == 1, output
    assert LinkStatus.objects.get().state == "stopped"


def test_the_webhook_sender_exits_70_when_a_task_dies_and_0_on_sigterm(tmp_path):
    db = f"sqlite:///{tmp_path / 'sender.sqlite3'}"  # its rounds fail and are retried: alive
    trigger = tmp_path / "die"
    trigger.touch()
    sender = Command(
        tmp_path, "webhook_sender", DATABASE_URL=db, SMSAPI_TEST_TASK_DEATH_FILE=str(trigger)
    )
    assert_died_loudly(sender, "test-task-death", "InjectedTaskDeath")

    sender = Command(tmp_path, "webhook_sender", DATABASE_URL=db)
    try:
        wait_until(lambda: "webhook_sender: running" in sender.output(), timeout=30)
        sender.process.send_signal(signal.SIGTERM)
        assert sender.wait() == 0, sender.output()
    finally:
        sender.kill()
    assert "CRITICAL" not in sender.output()


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_serve_exits_70_when_its_simulator_cannot_listen(tmp_path, simulator):
    """``--simulator PORT`` on a port another SMSC holds: the simulator's start raises."""
    serve = Command(
        tmp_path,
        "serve",
        "--port",
        str(free_port()),
        "--simulator",
        str(simulator.port),
        "--no-webhooks",
        DATABASE_URL=database_url(),
    )
    try:
        output = assert_died_loudly(serve, "smsc-simulator", "address already in use")
        # One clear line: which port, and the setting to change (issue 21).
        assert f"SMSC simulator port {simulator.port} on 127.0.0.1 is already in use" in output
        assert "set SIMULATOR_PORT to a free port" in output.splitlines()[-1], output
    finally:
        serve.kill()


def test_serve_exits_70_when_its_http_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        serve = Command(
            tmp_path,
            "serve",
            "--port",
            str(taken.getsockname()[1]),
            "--no-worker",
            "--no-webhooks",
        )
        try:
            output = assert_died_loudly(serve, "http-listener", "Address already in use")
            port = taken.getsockname()[1]
            assert f"HTTP port {port} on 127.0.0.1 is already in use" in output
            assert "set HTTP_PORT to a free port" in output.splitlines()[-1], output
            assert "SMS API listening" not in output, output  # never said when untrue
        finally:
            serve.kill()


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_serve_answers_503_while_it_stops_after_a_death_then_exits_70(tmp_path):
    """The worker is bound with a submit in flight when a task dies: while the worker
    drains its window (the SMSC answers late), /readyz of the process says why it is
    not ready; then the worker unbinds and the process exits 70."""
    port = free_port()
    trigger = tmp_path / "die"
    # The SMSC answers after 60 s: the worker's drain lasts until the unanswered
    # submit times out (SMPP_RESPONSE_TIMEOUT after it was sent).
    with SimulatorThread(SimulatorConfig(port=0, response_delay=60)) as smsc:
        serve = Command(
            tmp_path,
            "serve",
            "--port",
            str(port),
            "--no-webhooks",
            DATABASE_URL=database_url(),
            SMPP_ADDR=f"127.0.0.1:{smsc.port}",
            SMPP_RESPONSE_TIMEOUT="4",
            SMSAPI_TEST_TASK_DEATH_FILE=str(trigger),
        )
        try:

            def ready():
                answer = get_json(port, "/readyz")
                return answer is not None and answer[0] == 200

            wait_until(ready, timeout=30)
            store.create_messages(
                [NewMessage(dst="5550001", text="hi", split=split_for_smsc("hi", "auto"))]
            )
            wait_until(lambda: smsc.stats()["submits_received"] >= 1, timeout=10)
            trigger.touch()  # a submit is in flight: the worker has a window to drain
            answers = []
            while serve.process.poll() is None:
                answers.append(get_json(port, "/readyz"))
                time.sleep(0.05)
            output = assert_died_loudly(serve, "test-task-death", "InjectedTaskDeath")
        finally:
            serve.kill()
        stopping = [a for a in answers if a is not None and a[0] == 503]
        assert stopping, f"no 503 seen while stopping: {answers[-5:]}\n{output}"
        assert all(a[1]["checks"] == {"process": "failed"} for a in stopping), stopping
        assert "test-task-death" in stopping[0][1]["error"]
        assert smsc.stats()["unbinds_received"] == 1, output  # a clean stop of the worker
    link = LinkStatus.objects.get()
    assert link.state == "stopped"
    assert link.heartbeat_at > timezone.now() - timedelta(minutes=1)


# --- readiness within a second, whatever the store does ------------------------------------


def serve_http_only(tmp_path: Path, port: int, **env: str) -> Command:
    serve = Command(tmp_path, "serve", "--no-worker", "--no-webhooks", "--port", str(port), **env)

    def live():
        answer = get_json(port, "/healthz")  # liveness: never touches the store
        if serve.process.poll() is not None:
            pytest.fail(f"serve exited:\n{serve.output()}")
        return answer is not None and answer[0] == 200

    wait_until(live, timeout=30)
    return serve


def timed_readiness(port: int) -> tuple[float, tuple[int, dict] | None]:
    started = time.monotonic()
    answer = get_json(port, "/readyz")
    return time.monotonic() - started, answer


def test_readiness_answers_503_quickly_when_postgresql_is_unreachable(tmp_path):
    port = free_port()
    closed = free_port()  # nothing listens there: every connection is refused
    serve = serve_http_only(
        tmp_path,
        port,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed}/nothing",
        DB_POOL_TIMEOUT="10",  # the pool would wait this long for a connection
        READINESS_TIMEOUT="1",
    )
    try:
        for _ in range(3):  # the pool keeps failing to connect: each probe is bounded
            elapsed, answer = timed_readiness(port)
            assert answer is not None and answer[0] == 503, answer
            assert answer[1]["checks"]["database"] == "failed", answer
            assert elapsed < 5, elapsed  # generous: the bound is 1 s
    finally:
        serve.kill()


HOLD_SQLITE = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS t (x)")
db.execute("PRAGMA locking_mode=EXCLUSIVE")  # even readers of other processes must wait
db.execute("BEGIN EXCLUSIVE")
db.execute("INSERT INTO t VALUES (1)")
print("locked", flush=True)
time.sleep(120)
"""


def test_readiness_answers_503_quickly_when_sqlite_is_locked(tmp_path):
    """Another process holds the store exclusively: a connection waits out SQLite's
    busy timeout (10 s) before it fails; /readyz does not wait that long."""
    path = tmp_path / "locked.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SQLITE, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        port = free_port()
        serve = serve_http_only(
            tmp_path,
            port,
            DATABASE_URL=f"sqlite:///{path}",
            SQLITE_BUSY_TIMEOUT="10",  # a connection would wait this long for the lock
            READINESS_TIMEOUT="1",
        )
        try:
            for _ in range(3):
                elapsed, answer = timed_readiness(port)
                assert answer is not None and answer[0] == 503, answer
                assert answer[1]["checks"]["database"] == "failed", answer
                assert elapsed < 5, elapsed
        finally:
            serve.kill()
    finally:
        holder.kill()
        holder.wait()
