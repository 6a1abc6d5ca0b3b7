"""Kannel (Debian's ``kannel`` package, 1.4.x) beside the service, against the same SMSC.

``KannelStack`` starts, for one measurement: the SMSC simulator (``bench/services.py``
``Simulator``, the one our set-ups use, with the same options), a small HTTP
receiver for Kannel's delivery-report callbacks (``DlrSink``), then ``bearerbox``
(SMPP transceiver to the simulator, ``max-pending-submits`` 100, DLR on, internal
DLR storage, no store file unless ``store_file``: then ``store-type = file``, each
message written to the store as it is accepted, as ours are) and ``smsbox``
(``/cgi-bin/sendsms``). Its
configuration is written into a temporary directory at run time; every port is
a free port on 127.0.0.1.

``run_wrk_get`` is wrk as ``bench/load.py`` runs it (same output line), but with
GET: Kannel's sendsms takes its parameters in the query string.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from bench.load import WRK_SCRIPT
from bench.services import CpuMeter, Simulator, free_port

# The SMS the bench sends, as bench/scenarios.py SEND_BODY sends it to us.
SENDER, RECIPIENT, TEXT = "bench", "5511900000001", "hello from the bench"
# Kannel's dlr-mask: 1 delivered + 2 failed, one callback per message with its final
# receipt (as our store records each receipt). 31 would add the SMSC's ack (8),
# "buffered" (4) and rejection (16) callbacks.
DLR_MASK = 3

# wrk's report line (bench/load.py), with GET and an optional cap per thread.
WRK_GET_SCRIPT = """
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
if limit > 0 then
  local answered = 0
  response = function(status, headers, body)
    answered = answered + 1
    if answered >= limit then wrk.thread:stop() end
  end
end
""" + WRK_SCRIPT[WRK_SCRIPT.index("done = function") :]

CONFIG = """\
# Written by bench/kannel.py for one bench run and deleted after it. The passwords are
# throwaway random values made at run time (secrets.token_hex); every port is on 127.0.0.1.
group = core
admin-port = {admin_port}
admin-interface = 127.0.0.1
admin-password = {admin_password}
status-password = {admin_password}
admin-deny-ip = "*.*.*.*"
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox_port}
smsbox-interface = 127.0.0.1
dlr-storage = internal
{store}log-file = "{tmp}/bearerbox.log"
log-level = 2

group = smsc
smsc = smpp
smsc-id = simulator
host = 127.0.0.1
port = {smsc_port}
transceiver-mode = true
smsc-username = "{smsc_user}"
smsc-password = "{smsc_password}"
system-type = ""
max-pending-submits = 100
enquire-link-interval = 30
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms_port}
sendsms-interface = 127.0.0.1
log-file = "{tmp}/smsbox.log"
log-level = 2

group = sendsms-user
username = bench
password = {send_password}
max-messages = 1
concatenation = false
"""


def kannel_binary(name: str) -> str | None:
    """Where ``bearerbox`` or ``smsbox`` is (Debian puts them in /usr/sbin, which a
    user's PATH may lack)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def kannel_installed() -> bool:
    return bool(kannel_binary("bearerbox") and kannel_binary("smsbox"))


def kannel_version() -> str:
    """The installed package's version ('' when it is not installed)."""
    query = ["dpkg-query", "-W", "-f=${Version}", "kannel"]
    try:
        result = subprocess.run(query, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def ensure_kannel() -> str:
    """'' when bearerbox and smsbox are here, installing Debian's ``kannel`` if need
    be; else why Kannel cannot run (the bench then gives our figures only).

    On a host with an init system, Debian's package may also start its own Kannel
    service (its /etc/kannel/kannel.conf); the bench does not use it.
    """
    if kannel_installed():
        return ""
    if shutil.which("apt-get") is None:
        return "Kannel is not installed and there is no apt-get to install it with"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "kannel"]
    error = "no message"
    for step in (install, ["apt-get", "update", "-qq"], install):
        try:
            result = subprocess.run(prefix + step, env=env, capture_output=True, text=True)
        except OSError as exc:  # no sudo
            return f"Kannel is not installed and could not be: {exc}"
        if kannel_installed():
            return ""
        error = (result.stderr.strip().splitlines() or [error])[-1]
    return f"Kannel could not be installed (apt-get install kannel): {error}"


class DlrSink:
    """The dlr-url Kannel calls back: counts the callbacks by DLR type (1 delivered).

    An asyncio server on a thread of the bench process (its CPU shows as the load
    generator's), answering 200 on kept-alive HTTP/1.1 connections.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def delivered(self) -> int:
        return self.counts["1"]

    def start(self) -> DlrSink:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the DLR sink did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        server = loop.run_until_complete(
            loop.create_server(lambda: _SinkProtocol(self.counts), "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()
        loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None


class _SinkProtocol(asyncio.Protocol):
    _TYPE = re.compile(rb"[?&]type=(\d+)")
    _ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:  # GET requests: no body
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            found = self._TYPE.search(head.split(b"\r\n", 1)[0])
            self.counts[found.group(1).decode() if found else "?"] += 1
            self.transport.write(self._ANSWER)


class KannelStack:
    """Simulator, DLR sink, bearerbox and smsbox for one measurement (a context manager)."""

    def __init__(self, simulator_options: dict, store_file: bool = False) -> None:
        self.simulator_options = simulator_options
        self.store_file = store_file
        self.tmp = Path(tempfile.mkdtemp(prefix="kannel-bench-"))
        self.simulator: Simulator | None = None
        self.sink = DlrSink()
        self.bearerbox: subprocess.Popen | None = None
        self.smsbox: subprocess.Popen | None = None
        self.sendsms_port = 0
        self._password = secrets.token_hex(12)  # throwaway, for this run only

    def __enter__(self) -> KannelStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "smsapi.settings",
            "SMSAPI_DATA_DIR": str(self.tmp),
            "SECRET_KEY": "bench-only",
            "LOG_LEVEL": "WARNING",
        }
        self.simulator = Simulator(env, self.tmp).start(**self.simulator_options)
        self.sink.start()
        config = self.write_config()
        self.bearerbox = self._spawn("bearerbox", config)
        time.sleep(0.5)  # smsbox connects to bearerbox's smsbox port
        self.smsbox = self._spawn("smsbox", config)
        self._wait_ready()

    def write_config(self) -> Path:
        self.sendsms_port = free_port()
        path = self.tmp / "kannel.conf"
        path.write_text(
            CONFIG.format(
                tmp=self.tmp,
                admin_port=free_port(),
                admin_password=secrets.token_hex(12),
                smsbox_port=free_port(),
                sendsms_port=self.sendsms_port,
                smsc_port=self.simulator.port,
                smsc_user="smsapi",  # the simulator's defaults (docs/simulator.md)
                smsc_password="secret",
                send_password=self._password,
                # Kannel's message store: what it has accepted survives its restart.
                store=(
                    f'store-type = file\nstore-location = "{self.tmp}/kannel.store"\n'
                    if self.store_file
                    else ""
                ),
            )
        )
        return path

    def _spawn(self, program: str, config: Path) -> subprocess.Popen:
        log = open(self.tmp / f"{program}.out", "w")  # noqa: SIM115 - lives as the process does
        # -v 4: only panics on stderr (Kannel logs every message at debug level by default)
        args = [kannel_binary(program) or program, "-v", "4", str(config)]
        return subprocess.Popen(args, stdout=log, stderr=log)

    def sendsms_url(self, text: str = TEXT) -> str:
        query = urllib.parse.urlencode(
            {
                "username": "bench",
                "password": self._password,
                "from": SENDER,
                "to": RECIPIENT,
                "text": text,
                "dlr-mask": DLR_MASK,
                "dlr-url": f"http://127.0.0.1:{self.sink.port}/dlr?type=%d",
            }
        )
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms?{query}"

    def _wait_ready(self, timeout: float = 30) -> None:
        """Until one message is accepted by smsbox and its receipt has come back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in (self.bearerbox, self.smsbox):
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited; see the logs in {self.tmp}")
            try:
                with urllib.request.urlopen(self.sendsms_url("ready?"), timeout=2) as answer:
                    if answer.status == 202 and self._wait_delivered(1, 10):
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"Kannel did not become ready; see the logs in {self.tmp}")

    def _wait_delivered(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.sink.delivered < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.sink.delivered >= count

    def stop(self) -> None:
        for process in (self.smsbox, self.bearerbox):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)  # a graceful bearerbox sends its queue first
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.smsbox = self.bearerbox = None
        self.sink.stop()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        shutil.rmtree(self.tmp, ignore_errors=True)


class KannelCpuMeter(CpuMeter):
    """``CpuMeter`` over Kannel's processes: bearerbox, smsbox, and the simulator."""

    def __init__(self, kannel: KannelStack) -> None:  # noqa: D107 - no Stack: its own groups
        self.stack = kannel
        self.groups = {
            "bearerbox": [kannel.bearerbox.pid],
            "smsbox": [kannel.smsbox.pid],
            "simulator": [kannel.simulator.process.pid],
        }


def start_wrk_get(
    url: str, connections: int, seconds: float, threads: int = 2, per_thread_limit: int = 0
) -> subprocess.Popen:
    """wrk GETting ``url`` from ``connections`` keep-alive clients; each thread stops
    after ``per_thread_limit`` answers when it is set."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_GET_SCRIPT)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    args += ["--timeout", "10s", "-s", str(script), url]
    env = {"PATH": "/usr/bin:/bin", "BENCH_LIMIT": str(per_thread_limit)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    process.script = script  # removed by wrk_figures
    return process


def wrk_figures(process: subprocess.Popen, timeout: float) -> dict:
    """The figures of a wrk started by ``start_wrk_get``, as ``bench/load.py`` gives them."""
    try:
        output = process.communicate(timeout=timeout)[0]
    finally:
        process.script.unlink(missing_ok=True)
    line = next(x for x in output.splitlines() if x.startswith("BENCH "))
    figures = json.loads(line[len("BENCH ") :])
    figures["req_per_s"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["errors"] = sum(
        figures[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return figures


def run_wrk_get(url: str, connections: int, seconds: float, threads: int = 2) -> dict:
    return wrk_figures(start_wrk_get(url, connections, seconds, threads), seconds + 60)
