"""The service under test, started the way a deployment starts it: as processes.

Two set-ups:

- ``embedded``: SQLite and the in-process channel layer. ``manage.py serve``
  runs HTTP and the SMPP worker in one process (the in-process layer does not
  cross processes); the SMSC simulator is a process of its own.
- ``postgres``: PostgreSQL and Redis. ``daphne smsapi.asgi:application``
  processes on one port (the kernel spreads the connections between them, as a
  load balancer would: see ``Stack.start``), ``manage.py smpp_worker`` and the
  simulator.

Everything listens on 127.0.0.1 only. A bench database is created and dropped
(PostgreSQL) or lives in a temporary directory (SQLite).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "smsapi_bench"
SERVICE_APPLICATION = "smsapi.asgi:application"  # what daphne serves
REDIS_BENCH_URL = "redis://127.0.0.1:6379/5"  # not 0 (default) nor 3 (the tests)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MB."""
    return _proc_status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _proc_status_kb(pid, "VmRSS") / 1024


def _proc_status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU used by each part of the set-up between ``start()`` and ``stop()``, in cores.

    PostgreSQL and Redis are counted whole (every process of theirs on the
    machine), so other work on the machine shows up there too.
    """

    def __init__(self, stack: Stack):
        self.groups = {
            "server": stack.server_pids,
            "worker": [p.pid for p in [stack.worker, *stack.more_workers] if p is not None],
            "simulator": [stack.simulator.process.pid] if stack.simulator else [],
        }
        self.stack = stack

    def _sample(self) -> dict[str, float]:
        groups = {
            **self.groups,
            "postgres": _pids_named("postgres"),
            "redis": _pids_named("redis-server"),
        }
        sample = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
        sample["load generator"] = _children_cpu()
        return sample

    def start(self) -> CpuMeter:
        self._first, self._started = self._sample(), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        last, elapsed = self._sample(), time.monotonic() - self._started
        return {
            name: round((last[name] - self._first.get(name, 0.0)) / elapsed, 2)
            for name in last
            if last[name] - self._first.get(name, 0.0) > 0.005 * elapsed
        }


def _children_cpu() -> float:
    """CPU of this process and of the load generators it ran (wrk), in seconds."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class Simulator:
    """``manage.py smsc_simulator`` as a process, with its HTTP control port."""

    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen | None = None
    port: int = 0
    control_port: int = 0

    def start(self, **options: object) -> Simulator:
        args = [PYTHON, "manage.py", "smsc_simulator", "--port", "0", "--control-port", "0"]
        args += ["--log-level", "WARNING"]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=open(self.log_dir / "simulator.log", "w"),  # noqa: SIM115
            text=True,
        )
        line = self.process.stdout.readline()  # "SMSC simulator listening on h:p control=c"
        if "listening" not in line:
            raise RuntimeError(f"simulator did not start: {line!r}")
        words = line.split()
        self.port = int(words[4].rsplit(":", 1)[1])
        self.control_port = int(words[5].removeprefix("control="))
        return self

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        return self.call("GET", "/stats")

    def configure(self, **changes: object) -> dict:
        return self.call("POST", "/config", changes)

    def reset(self) -> None:
        self.call("POST", "/reset")

    def submits(self, since: int = 0) -> list[dict]:
        """Every recorded submit from index ``since`` on."""
        records: list[dict] = []
        while True:
            page = self.call("GET", f"/submits?since={since}&limit=20000")
            records += page["submits"]
            if not page["submits"]:
                return records
            since = page["next"]

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


@dataclass
class Stack:
    """One set-up of the service: its processes, ports and environment."""

    name: str
    http_workers: int = 2  # daphne processes (postgres set-up only)
    application: str = SERVICE_APPLICATION  # what daphne serves (postgres set-up)
    env: dict[str, str] = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="smsapi-bench-")))
    http_port: int = 0
    simulator: Simulator | None = None
    servers: list[subprocess.Popen] = field(default_factory=list)
    worker: subprocess.Popen | None = None
    more_workers: list[subprocess.Popen] = field(default_factory=list)  # PostgreSQL: sharing binds
    _worker_env: dict[str, str] = field(default_factory=dict)
    _listeners: list[socket.socket] = field(default_factory=list)

    @property
    def postgres(self) -> bool:
        return self.name == "postgres"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # --- set-up and tear-down ----------------------------------------------------------

    def prepare(self) -> Stack:
        """Create the store and migrate it."""
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "SMSAPI_DATA_DIR": str(self.tmp),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "smsapi.settings",
            "SECRET_KEY": "bench-only",
        }
        if self.postgres:
            self.env["DATABASE_URL"] = recreate_pg_database()
            _flush_redis()
            self.env["REDIS_URL"] = REDIS_BENCH_URL
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        return self

    def start(
        self, simulator_options: dict | None = None, spread: str = "accept", **worker_env: str
    ) -> Stack:
        """Start the simulator, the worker and the HTTP server(s); wait until ready.

        ``spread`` is how new connections reach the daphne processes (the
        PostgreSQL set-up), as a load balancer in front of them would spread them:

        - ``"accept"``: one listening socket shared by the processes; the process
          that accepts first, the less busy one, takes each new connection. For
          clients that connect one at a time (a connection per batch).
        - ``"hash"``: a socket per process on one port (``SO_REUSEPORT``); the
          kernel hashes each connection to one of them. For wrk, which opens its
          20 keep-alive connections at once: from one shared socket, the process
          that woke first at times accepted them all (Twisted accepts up to 100
          at a time), and the figure was one process's.
        """
        self.simulator = Simulator(self.env, self.tmp).start(**(simulator_options or {}))
        env = {**self.env, "SMPP_ADDR": f"127.0.0.1:{self.simulator.port}", **worker_env}
        self._worker_env = env
        if self.postgres:
            self.worker = self._spawn([PYTHON, "manage.py", "smpp_worker"], env, "worker")
            self._listen(spread)
            for index in range(self.http_workers):
                fd = self._listeners[index % len(self._listeners)].fileno()
                args = [str(Path(PYTHON).parent / "daphne"), "--fd", str(fd), "-v", "0"]
                args += [self.application]
                self.servers.append(self._spawn(args, env, f"daphne-{index}", pass_fds=(fd,)))
        else:
            self.http_port = self.http_port or free_port()
            args = [PYTHON, "manage.py", "serve", "--host", "127.0.0.1"]
            args += ["--port", str(self.http_port)]
            self.servers.append(self._spawn(args, env, "serve"))
        self._wait_ready()
        return self

    def _listen(self, spread: str) -> None:
        """The daphne processes' listening socket(s), on one new port (see ``start``)."""
        if spread not in ("accept", "hash"):
            raise ValueError(f"spread: 'accept' or 'hash', not {spread!r}")
        count = self.http_workers if spread == "hash" else 1
        port = 0
        for _ in range(count):
            listener = socket.create_server(
                ("127.0.0.1", port), backlog=2048, reuse_port=spread == "hash"
            )
            listener.set_inheritable(True)
            port = listener.getsockname()[1]
            self._listeners.append(listener)
        self.http_port = port

    def _spawn(self, args: list[str], env: dict, name: str, pass_fds=()) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "a")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=pass_fds
        )

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes():
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} exited; see the logs in {self.tmp}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the service did not become ready; see the logs in {self.tmp}")

    def add_worker(self) -> None:
        """One more ``smpp_worker`` (PostgreSQL): the workers share the binds between them."""
        name = f"worker-{len(self.more_workers) + 2}"
        self.more_workers.append(
            self._spawn([PYTHON, "manage.py", "smpp_worker"], self._worker_env, name)
        )

    def processes(self) -> list[subprocess.Popen]:
        return [p for p in [*self.servers, self.worker, *self.more_workers] if p is not None]

    @property
    def worker_pid(self) -> int:
        """The process that runs the SMPP worker (the server itself when embedded)."""
        return (self.worker or self.servers[0]).pid

    @property
    def server_pids(self) -> list[int]:
        return [p.pid for p in self.servers]

    def stop_service(self) -> None:
        """Stop the server(s) and the worker gracefully (the worker drains and unbinds)."""
        for process in self.processes():
            _stop(process)
        self.servers.clear()
        self.worker = None
        self.more_workers.clear()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None

    def close(self) -> None:
        self.stop_service()
        if self.postgres:
            with contextlib.suppress(Exception):
                drop_pg_database()
            with contextlib.suppress(Exception):
                _flush_redis()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the store, directly -------------------------------------------------------------

    def sql(self, statements: list[str]) -> None:
        """Run SQL against the bench store (bulk loads the API would take minutes for)."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
                for statement in statements:
                    conn.execute(statement)
        else:
            import sqlite3

            conn = sqlite3.connect(self.tmp / "bench.sqlite3", timeout=60)
            try:
                for statement in statements:
                    conn.execute(statement)
                conn.commit()
            finally:
                conn.close()

    def rows(self, query: str) -> list[tuple]:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.env["DATABASE_URL"]) as conn:
                return conn.execute(query).fetchall()
        import sqlite3

        conn = sqlite3.connect(self.tmp / "bench.sqlite3", timeout=60)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()

    def scalar(self, query: str):
        if self.postgres:
            import psycopg

            with psycopg.connect(self.env["DATABASE_URL"]) as conn:
                return conn.execute(query).fetchone()[0]
        import sqlite3

        conn = sqlite3.connect(self.tmp / "bench.sqlite3", timeout=60)
        try:
            return conn.execute(query).fetchone()[0]
        finally:
            conn.close()


def _stop(process: subprocess.Popen | None, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def recreate_pg_database(name: str = PG_BENCH_DB) -> str:
    """Drop and create the PostgreSQL database ``name``; returns its URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(name: str = PG_BENCH_DB) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_BENCH_URL)
    try:
        client.flushdb()
    finally:
        client.close()
