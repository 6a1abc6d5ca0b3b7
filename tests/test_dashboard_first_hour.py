"""The first hour with the dashboard and the admin (issue 21): headless Chromium against
``manage.py serve --simulator``, the two-command demo's own set-up.

A key-needed Send says so; typing the key keeps the page (and the typed message); the
"simulate an incoming message" form of the embedded simulator makes an MO appear in the
feed; /favicon.ico and /v1/docs/ answer; the admin's message page fits the window and
shows times to the microsecond. Screenshots go to /tmp/i21b-*.png (and test-output/).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_dashboard import OUTPUT, ROOT, browser, manage, wait_for_http  # noqa: F401

ADMIN_PASSWORD = "first-hour-pass-1"
SCREENSHOTS = Path(os.environ.get("I21B_SCREENSHOTS", "/tmp"))


def _env(tmp_path: Path, auth: str) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'first-hour.sqlite3'}",
        "SMSAPI_DATA_DIR": str(tmp_path),
        "SMSAPI_AUTH": auth,
        "SMPP_RECONNECT_DELAYS": "0.2,0.5,1",
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run_manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def embedded(request, tmp_path):
    """``serve --simulator`` (as ``make run`` starts it) on fresh ports and database."""
    auth = getattr(request, "param", "off")
    env = _env(tmp_path, auth)
    run_manage(env, "migrate", "-v0")
    http_port = free_port()
    log = tmp_path / "serve.log"
    serve = manage(
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--simulator",
        str(free_port()),
        env=env,
        log=log,
    )
    try:
        wait_for_http(http_port, serve, log)
        yield {"http": http_port, "env": env, "log": log, "tmp": tmp_path}
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def request(port: int, method: str, path: str, body: dict | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    conn.request(
        method, path, body=json.dumps(body) if body is not None else None, headers=all_headers
    )
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"i21b-{name}.png"), full_page=True)
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.parametrize("embedded", ["required"], indirect=True)
def test_send_without_a_key_says_so_and_the_key_keeps_the_message(browser, embedded):  # noqa: F811
    output = run_manage(embedded["env"], "apikey", "create", "first-hour")
    key = re.search(r"^(sk_\S+)$", output, re.M)[1]
    port = embedded["http"]
    # The MO control respects the keys like the rest of the API.
    status, _, body = request(
        port, "POST", "/v1/simulator/mo", {"src": "1", "dst": "2", "text": "x"}
    )
    assert status == 401, body
    assert "error" in json.loads(body)

    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(
            "document.querySelector('#rpc-pill .label').textContent.includes('API key needed')",
            timeout=15_000,
        )
        page.fill("#dst", "5551234")
        page.fill("#text", "Typed before the key")
        page.click("#send-button")
        page.wait_for_selector('#send-result[data-kind="error"]', timeout=10_000)
        said = page.text_content("#send-result")
        assert "needs an API key" in said and "socket closed" not in said, said
        shoot(page, "dashboard-key-needed")

        page.evaluate("window.notReloaded = true")
        page.fill("#api-key", key)
        page.press("#api-key", "Enter")
        page.wait_for_selector('#rpc-pill[data-state="ok"]', timeout=10_000)
        page.wait_for_selector('#events-pill[data-state="ok"]', timeout=10_000)
        assert page.evaluate("window.notReloaded") is True  # the same page: no reload
        assert page.input_value("#text") == "Typed before the key"
        assert page.input_value("#dst") == "5551234"
        assert page.evaluate("localStorage.getItem('smsapi.apiKey')") == key

        page.click("#send-button")
        page.wait_for_selector('#send-result[data-kind="ok"]', timeout=15_000)
        page.wait_for_selector('#feed .feed-item[data-type="receipt"]', timeout=15_000)

        # The incoming-message form sends the key too.
        page.click("#mo-box summary")
        page.fill("#mo-text", "Reply with a key")
        page.click("#mo-button")
        page.wait_for_selector('#mo-result[data-kind="ok"]', timeout=10_000)
        page.wait_for_selector('#feed .feed-item[data-type="mo"]', timeout=15_000)
        assert "Reply with a key" in page.text_content('#feed .feed-item[data-type="mo"]')
        assert errors == []
    finally:
        page.close()


@pytest.mark.browser
def test_simulate_an_incoming_message_from_the_page(browser, embedded):  # noqa: F811
    port = embedded["http"]
    status, headers, body = request(port, "GET", "/favicon.ico")
    assert status == 200 and headers["Content-Type"] == "image/x-icon"
    assert body[:4] == b"\0\0\1\0"  # an ICO header
    status, headers, _ = request(port, "GET", "/v1/docs/")
    assert status == 301 and headers["Location"] == "/v1/docs"
    status, _, body = request(
        port, "POST", "/v1/simulator/mo", {"src": "1", "dst": "2", "text": ""}
    )
    assert status == 400 and json.loads(body)["error"].startswith('invalid parameter "text"')

    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector('#link-pill[data-state="ok"]', timeout=20_000)
        page.wait_for_selector('#events-pill[data-state="ok"]', timeout=10_000)
        assert page.get_attribute("#docs-link", "href") == "/v1/docs"

        page.click("#mo-box summary")
        page.fill("#mo-src", "5559876")
        page.fill("#mo-text", "Hi from the handset 👋 " + "long " * 15)  # two UCS-2 parts
        page.click("#mo-button")
        page.wait_for_selector('#mo-result[data-kind="ok"]', timeout=10_000)
        assert "2 parts" in page.text_content("#mo-result")
        item = page.wait_for_selector('#feed .feed-item[data-type="mo"]', timeout=15_000)
        assert "Hi from the handset 👋" in item.text_content()
        assert "5559876" in item.text_content()
        shoot(page, "dashboard-incoming")
        assert errors == []
    finally:
        page.close()


@pytest.mark.browser
def test_the_admin_message_page_fits_and_shows_sub_second_times(browser, embedded):  # noqa: F811
    port = embedded["http"]
    run_manage(
        embedded["env"],
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
        "--email",
        "a@example.com",
    )
    long_text = "x" * 700 + " and then " + "word " * 60  # one unbroken run, many parts
    status, _, body = request(port, "POST", "/v1/send", {"dst": "5551234", "text": long_text})
    assert status in (200, 202), body
    message_id = json.loads(body)["id"]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"http://127.0.0.1:{port}/admin/login/?next=/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", ADMIN_PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#site-name", timeout=10_000)

        page.goto(f"http://127.0.0.1:{port}/admin/messaging/message/{message_id}/change/")
        page.wait_for_selector("#content", timeout=10_000)
        shoot(page, "admin-message")
        page.locator(".inline-group").first.screenshot(
            path=str(SCREENSHOTS / "i21b-admin-parts.png")
        )
        # Nothing runs off sideways: the page is no wider than the window.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, width
        content = page.text_content("#content")
        assert re.search(r"\d\d:\d\d:\d\d\.\d{6}", content), "times without seconds/microseconds"

        page.goto(f"http://127.0.0.1:{port}/admin/messaging/message/")
        page.wait_for_selector("#result_list", timeout=10_000)
        shoot(page, "admin-messages")
        assert re.search(r"\d\d:\d\d:\d\d\.\d{6}", page.text_content("#result_list"))
    finally:
        page.close()
