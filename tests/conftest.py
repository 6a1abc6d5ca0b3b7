"""Shared fixtures: the SMSC simulator, and the worker as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import upstream
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from tests.live import database_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _close_the_async_tests_connection(django_db_setup) -> Iterator[None]:
    """Async tests run their ORM calls on asgiref's one sync thread, and the API's
    intake keeps its thread's connection; neither is handed back, and PostgreSQL
    would not drop the test database while one is open ("being accessed by other
    users"). Closed before the drop."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from messaging.api.intake import INTAKE_THREAD

    SyncToAsync.single_thread_executor.submit(connections.close_all).result()
    INTAKE_THREAD.submit(connections.close_all).result()


@pytest.fixture(autouse=True)
def _fresh_routing() -> Iterator[None]:
    """Each test reads the routes its own store holds (the API caches them a second)."""
    from messaging.connectors import ConnectorAvailability, routing_cache

    routing_cache.forget()
    routing_cache.availability = ConnectorAvailability(routing_cache.clock)
    yield
    routing_cache.forget()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate.__doc__ or predicate}")
        time.sleep(interval)


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    """A healthy SMSC on an ephemeral port, answering receipts quickly."""
    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0.05)) as smsc:
        yield smsc


class WorkerProcess:
    """``manage.py smpp_worker`` in its own process, against the test database."""

    def __init__(self, smpp_port: int, tmp_path: Path, **env: str):
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "SMPP_ADDR": f"127.0.0.1:{smpp_port}",
            "SMPP_RECONNECT_DELAYS": "0.2,0.5,1",
            "SMSAPI_DATA_DIR": str(tmp_path),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "smpp_worker"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        self.log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(smpp_port: int, **env: str) -> WorkerProcess:
        worker = WorkerProcess(smpp_port, tmp_path, **env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(signal.SIGKILL) if worker.process else None


@pytest.fixture
def another_version(monkeypatch):
    """Every distribution reports a version nothing in upstream/ was written for."""
    monkeypatch.setattr(upstream, "installed_version", lambda distribution: "99.0")
    upstream._warn_once.cache_clear()
    yield
    upstream._warn_once.cache_clear()
