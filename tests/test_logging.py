"""Structured logs: JSON lines off a terminal, text on one, the message id on both."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from smsapi.logging import JsonFormatter, TextFormatter, default_format
from tests.conftest import ROOT

LOG_A_LINE = """
import django, logging
django.setup()
logging.getLogger("smpp_gateway.worker").warning("part %d refused", 2, extra={"message_id": 42})
"""


def record(**extra) -> logging.LogRecord:
    logger = logging.getLogger("test.logging")
    return logger.makeRecord(
        "test.logging", logging.WARNING, __file__, 1, "sent %s", ("it",), None, extra=extra
    )


def test_json_lines_carry_the_context_and_keep_exceptions_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        failing = record(message_id=7, event_id=9)
        failing.exc_info = sys.exc_info()
    line = JsonFormatter().format(failing)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "test.logging"
    assert data["message"] == "sent it" and data["message_id"] == 7 and data["event_id"] == 9
    assert "ValueError: bad" in data["exception"] and data["time"].endswith("+00:00")


def test_text_lines_show_the_context_after_the_message():
    assert (
        TextFormatter()
        .format(record(message_id=7))
        .endswith("WARNING test.logging: sent it [message_id=7]")
    )
    assert TextFormatter().format(record()).endswith("WARNING test.logging: sent it")


def test_json_off_a_terminal_and_text_on_one():
    with open(os.devnull, "w") as file:
        assert default_format(file) == "json"
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert default_format(terminal) == "text"
    finally:
        os.close(leader)
        os.close(follower)


def run_logging(**env: str) -> str:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "smsapi.settings", "LOG_FORMAT": ""}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", LOG_A_LINE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stderr.strip()


def test_settings_pick_json_for_a_pipe_unless_log_format_says_text():
    data = json.loads(run_logging())
    assert data["message"] == "part 2 refused" and data["message_id"] == 42
    assert run_logging(LOG_FORMAT="text").endswith(
        "WARNING smpp_gateway.worker: part 2 refused [message_id=42]"
    )
