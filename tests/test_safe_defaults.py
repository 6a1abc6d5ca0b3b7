"""Safe defaults: the demo listens on loopback only, an exposed unsafe
configuration is warned about loudly at start, compose needs a SECRET_KEY."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smsapi.startup_checks import is_loopback, unsafe_configuration
from tests.conftest import ROOT, free_port, wait_until

# --- the rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "192.168.1.2", "sms.example"])
def test_addresses_reachable_from_elsewhere(host):
    assert not is_loopback(host)


def test_the_demo_on_loopback_deserves_no_warning():
    assert unsafe_configuration(["127.0.0.1"], auth="off", secret_key_set=False, debug=True) == []


def test_exposed_with_auth_off_no_secret_key_and_debug_gets_three_warnings():
    warnings = unsafe_configuration(
        ["127.0.0.1", "0.0.0.0"], auth="off", secret_key_set=False, debug=True
    )
    assert len(warnings) == 3
    auth, secret, debug = warnings
    assert "SMSAPI_AUTH=off" in auth and "0.0.0.0" in auth and "SMSAPI_AUTH=required" in auth
    assert "SECRET_KEY" in secret
    assert "DEBUG" in debug


def test_exposed_with_keys_and_a_secret_key_is_fine():
    assert unsafe_configuration(["::"], auth="required", secret_key_set=True, debug=False) == []


def test_each_unsafe_setting_is_named_alone():
    (only,) = unsafe_configuration(["10.1.1.1"], auth="required", secret_key_set=False, debug=False)
    assert "SECRET_KEY" in only and "10.1.1.1" in only
    (only,) = unsafe_configuration(["10.1.1.1"], auth="off", secret_key_set=True, debug=False)
    assert "SMSAPI_AUTH=off" in only


# --- manage.py serve ----------------------------------------------------------------------

UNSAFE_SETTINGS = ("HTTP_HOST", "SECRET_KEY", "SMSAPI_AUTH", "DEBUG")


@contextlib.contextmanager
def serve(tmp_path: Path, port: int, *args: str, **env: str):
    """``manage.py serve`` (HTTP only) with none of the settings above unless given."""
    log_path = tmp_path / f"serve-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k not in UNSAFE_SETTINGS}
    environment.update(SMSAPI_DATA_DIR=str(tmp_path), LOG_FORMAT="text", **env)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--no-worker", "--no-webhooks"]
            + ["--port", str(port), *args],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def listening():
            if process.poll() is not None:
                pytest.fail(f"serve exited:\n{log_path.read_text()}")
            return listeners(port)

        wait_until(listening, timeout=30)
        yield lambda: log_path.read_text()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def listeners(port: int) -> list[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                address, port_hex = fields[1].split(":")
                if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
                family = socket.AF_INET if width == 4 else socket.AF_INET6
                found.append(socket.inet_ntop(family, words))
    return found


def outward_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if is_loopback(address) else address


def test_serve_listens_on_loopback_only_by_default(tmp_path):
    port = free_port()
    with serve(tmp_path, port) as log:
        assert listeners(port) == ["127.0.0.1"], log()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        outward = outward_address()
        if outward is not None:  # from another interface's address: nobody answers
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((outward, port), timeout=5).close()
        assert "UNSAFE CONFIGURATION" not in log()  # the demo: open, but to this machine only


def test_serve_exposed_with_auth_off_and_no_secret_key_warns_loudly(tmp_path):
    port = free_port()
    with serve(tmp_path, port, HTTP_HOST="0.0.0.0") as log:
        assert listeners(port) == ["0.0.0.0"]
        time.sleep(0.2)  # the warnings are logged before listening; let the file catch up
        output = log()
    assert output.count("WARNING smsapi.startup: UNSAFE CONFIGURATION") == 2, output
    assert "listening on 0.0.0.0 with SMSAPI_AUTH=off" in output
    assert "listening on 0.0.0.0 without SECRET_KEY" in output


def test_serve_exposed_with_keys_and_a_secret_key_does_not_warn(tmp_path):
    port = free_port()
    with serve(
        tmp_path, port, "--host", "0.0.0.0", SMSAPI_AUTH="required", SECRET_KEY="s" * 50
    ) as log:
        assert listeners(port) == ["0.0.0.0"]
        assert "UNSAFE CONFIGURATION" not in log()


# --- make run, Docker ------------------------------------------------------------------------


def test_make_run_listens_on_loopback_unless_told_otherwise():
    def planned(*args: str) -> str:
        return subprocess.run(
            ["make", "-n", "-W", "migrate", "run", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k not in ("HTTP_HOST", "SMPP_ADDR")},
        ).stdout

    assert "manage.py serve --host 127.0.0.1 " in planned()
    assert "manage.py serve --host 127.0.0.1 " in planned("SMPP_ADDR=smsc.example.net:2775")
    assert "manage.py serve --host 0.0.0.0 " in planned("HTTP_HOST=0.0.0.0")


def test_compose_takes_the_secret_key_from_the_environment_and_publishes_on_loopback():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    app = compose["x-app"]["environment"]
    assert app["SECRET_KEY"].startswith("${SECRET_KEY:?")  # no default: refuses to start
    assert app["HTTP_HOST"] == "0.0.0.0"  # inside the container: reachable by the mapping
    (published,) = compose["services"]["server"]["ports"]
    assert published.startswith("${HTTP_BIND:-127.0.0.1}:")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HTTP_HOST=0.0.0.0" in dockerfile
