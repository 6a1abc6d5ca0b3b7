"""The dashboard, as a person uses it: headless Chromium against the real service.

``manage.py smsc_simulator`` and ``manage.py serve`` run as processes on a fresh
SQLite database; the page sends over the JSON-RPC socket, and the receipt, the
incoming message and the state change come back over the event stream.
A screenshot is kept in test-output/dashboard.png.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sms.encoding import _GSM_BASIC, _GSM_EXTENSION
from sms.splitting import split_message

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static" / "dashboard"
OUTPUT = ROOT / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def js_string_constant(source: str, name: str) -> str:
    """The value of ``const NAME = "..." + "...";`` in a JS file (JSON-compatible escapes)."""
    match = re.search(rf"const {name} =(.*?);\n", source, re.S)
    assert match, name
    return "".join(json.loads(literal) for literal in re.findall(r'"(?:[^"\\]|\\.)*"', match[1]))


def test_the_page_counts_with_the_servers_gsm_tables():
    source = (STATIC / "gsm.js").read_text()
    basic = "".join(_GSM_BASIC[code] for code in sorted(_GSM_BASIC))
    extension = "".join(_GSM_EXTENSION[code] for code in sorted(_GSM_EXTENSION))
    assert js_string_constant(source, "GSM_BASIC") == basic
    assert js_string_constant(source, "GSM_EXTENSION") == extension


# --- in the browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


SAMPLES = [
    ("hello", "auto"),
    ("a" * 160, "auto"),
    ("a" * 161, "auto"),
    ("€" * 80, "auto"),
    ("€" * 81, "auto"),
    ("a" * 152 + "€" + "b" * 20, "auto"),  # the escape pair would straddle the cut
    ("[x]" * 60, "gsm7"),
    ("😀" * 35, "auto"),
    ("😀" * 36, "auto"),
    ("a" * 66 + "😀" + "b" * 10, "auto"),  # the surrogate pair would straddle the cut
    ("Grüße aus Köln ✓", "auto"),
    ("é" * 141, "latin1"),
    ("ü" * 71, "raw"),
    ("a" * 70 + "😀" * 40, "ucs2"),
]


@pytest.mark.browser
@pytest.mark.parametrize("concat", ["udh", "udh16"])
def test_the_page_counts_parts_as_the_server_cuts_them(browser, concat):
    page = browser.new_page()
    try:
        page.set_content("<!doctype html><meta charset=utf-8><body></body>")
        page.add_script_tag(content=(STATIC / "gsm.js").read_text())
        results = page.evaluate(
            "([samples, concat]) => samples.map(([t, e]) => SmsText.analyse(t, e, concat))",
            [SAMPLES, concat],
        )
    finally:
        page.close()
    for (text, encoding), seen in zip(SAMPLES, results, strict=True):
        split = split_message(text, encoding, concat=concat, max_parts=255)
        expected = (split.encoding, len(split.parts), split.units)
        assert (seen["encoding"], seen["parts"], seen["units"]) == expected, text
        assert seen["characters"] == len(text)


@pytest.mark.browser
def test_an_unencodable_character_is_named_not_replaced(browser):
    page = browser.new_page()
    try:
        page.set_content("<!doctype html><meta charset=utf-8><body></body>")
        page.add_script_tag(content=(STATIC / "gsm.js").read_text())
        bad = page.evaluate("SmsText.analyse('price: 5 ₹', 'latin1').bad")
        forced = page.evaluate("SmsText.analyse('ok ✓ fine', 'auto').forcedBy")
    finally:
        page.close()
    assert bad == {"char": "₹", "position": 9, "text": "“₹” (U+20B9)"}
    assert forced == ["✓"]


# --- the whole service ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(*args: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no {pattern!r} in {log.name}:\n{log.read_text(errors='replace')}")


def wait_for_http(port: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v1/status")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the service did not come up:\n{log.read_text(errors='replace')}")


def post_json(port: int, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())


@pytest.fixture
def service(tmp_path):
    """The simulator and ``manage.py serve`` (HTTP + worker) on a fresh database."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.sqlite3'}",
        "SMSAPI_DATA_DIR": str(tmp_path),
        "SMPP_RECONNECT_DELAYS": "0.2,0.5,1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    processes = []
    try:
        sim_log = tmp_path / "simulator.log"
        simulator = manage(
            "smsc_simulator",
            "--port",
            "0",
            "--control-port",
            "0",
            "--receipt-delay",
            "0.5",
            env=env,
            log=sim_log,
        )
        processes.append(simulator)
        ports = wait_for_line(sim_log, r"listening on 127\.0\.0\.1:(\d+) control=(\d+)", simulator)
        smpp_port, control_port = int(ports[1]), int(ports[2])

        http_port = free_port()
        serve_log = tmp_path / "serve.log"
        serve = manage(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(http_port),
            env={**env, "SMPP_ADDR": f"127.0.0.1:{smpp_port}"},
            log=serve_log,
        )
        processes.append(serve)
        wait_for_http(http_port, serve, serve_log)
        yield {"http": http_port, "control": control_port, "log": serve_log}
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.browser
def test_send_from_the_page_and_watch_it_delivered(browser, service):
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{service['http']}/")
        expect_state = page.wait_for_selector
        expect_state('#link-pill[data-state="ok"]', timeout=20_000)
        expect_state('#rpc-pill[data-state="ok"]', timeout=10_000)
        expect_state('#events-pill[data-state="ok"]', timeout=10_000)

        # The meter follows the text as it is typed.
        page.fill("#src", "bart")
        page.fill("#dst", "5551234")
        page.fill("#text", "Hello Lisa! Price: 5 € {ok}")
        assert page.text_content("#meter-encoding") == "GSM-7"
        assert page.text_content("#meter-parts") == "1"
        page.fill("#text", "Grüße ✓ " + "x" * 70)
        assert page.text_content("#meter-encoding") == "UCS-2"
        assert page.text_content("#meter-parts") == "2"
        assert "✓" in page.text_content("#meter-note")
        page.fill("#text", "Hello Lisa! See you at 5 € {ok}")

        page.click("#send-button")
        page.wait_for_selector('#send-result[data-kind="ok"]', timeout=15_000)
        message_id = re.search(r"#(\d+)", page.text_content("#send-result"))[1]

        # The receipt arrives in the feed, and the table shows the message delivered.
        page.wait_for_selector('#feed .feed-item[data-type="receipt"]', timeout=15_000)
        row = f'#messages tr[data-id="{message_id}"]'
        page.wait_for_selector(f'{row} .state[data-state="delivered"]', timeout=15_000)
        assert page.text_content(f"{row} td:nth-child(4)") == "5551234"
        assert page.text_content(f"{row} td:nth-child(10)") == "default"  # its connector
        assert "default bind 0: bound" in page.get_attribute("#link-pill", "title")

        # An incoming message from a handset shows up too.
        post_json(
            service["control"],
            "/mo",
            {"src": "5559876", "dst": "smsapi", "text": "Hi back 👋", "encoding": "ucs2"},
        )
        page.wait_for_selector('#feed .feed-item[data-type="mo"]', timeout=15_000)
        assert "Hi back 👋" in page.text_content('#feed .feed-item[data-type="mo"]')

        # A bad request answers with the server's own words.
        page.fill("#dst", "")
        page.click("#send-button")
        page.wait_for_selector('#send-result[data-kind="error"]', timeout=10_000)
        assert page.text_content("#send-result") == (
            '400 Bad Request: missing parameter "dst": number of recipient'
        )
        page.fill("#dst", "5551234")
        page.fill("#text", "Hello Lisa! See you at 5 € {ok}")
        page.evaluate("document.getElementById('send-result').textContent = ''")

        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
        assert errors == []
    finally:
        page.close()
