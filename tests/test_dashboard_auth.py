"""The dashboard when the gateway requires API keys: headless Chromium, the real service.

Without a key the page says so (the send socket is refused, the table cannot
load); once the key is typed into the *API key* field it is kept in the
browser and the page sends, streams and lists with it, without a reload.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.test_dashboard import ROOT, browser, service  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def keys_required(monkeypatch):
    """Before ``service`` starts: the server processes read it from the environment."""
    monkeypatch.setenv("SMSAPI_AUTH", "required")


def create_key(tmp_path) -> str:
    """``manage.py apikey create`` against the service's database; the printed key."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.sqlite3'}",
        "SMSAPI_DATA_DIR": str(tmp_path),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    output = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", "dashboard"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return re.search(r"^(sk_\S+)$", output, re.M)[1]


@pytest.mark.browser
def test_the_page_asks_for_a_key_then_works_with_it(browser, service, tmp_path):  # noqa: F811
    key = create_key(tmp_path)
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{service['http']}/")
        page.wait_for_selector('#link-pill[data-state="ok"]', timeout=20_000)  # public
        page.wait_for_function(
            "document.querySelector('#rpc-pill .label').textContent.includes('API key needed')",
            timeout=10_000,
        )
        page.wait_for_function(
            "document.getElementById('messages-info').textContent.includes('missing API key')",
            timeout=10_000,
        )

        page.evaluate("window.samePage = true")
        page.fill("#api-key", key)
        page.press("#api-key", "Enter")  # kept; the connections start again with it
        page.wait_for_selector('#rpc-pill[data-state="ok"]', timeout=10_000)
        assert page.evaluate("window.samePage") is True  # no reload (issue 21)
        assert page.evaluate("localStorage.getItem('smsapi.apiKey')") == key
        assert page.input_value("#api-key") == key
        page.wait_for_selector('#rpc-pill[data-state="ok"]', timeout=10_000)
        page.wait_for_selector('#events-pill[data-state="ok"]', timeout=10_000)

        page.fill("#dst", "5551234")
        page.fill("#text", "Hello with a key")
        page.click("#send-button")
        page.wait_for_selector('#send-result[data-kind="ok"]', timeout=15_000)
        message_id = re.search(r"#(\d+)", page.text_content("#send-result"))[1]
        page.wait_for_selector('#feed .feed-item[data-type="receipt"]', timeout=15_000)
        row = f'#messages tr[data-id="{message_id}"]'
        page.wait_for_selector(f'{row} .state[data-state="delivered"]', timeout=15_000)
        assert errors == []
    finally:
        page.close()
