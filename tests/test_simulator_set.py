"""Several SMSCs in one simulator process (``simulator.smsc_set``, issue 24): the file's
checks, and two SMSCs over real TCP, each with its own credentials and behaviour."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from smpp.pdu import as_text, decode_pdu, encode_pdu
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.smsc_set import read_smsc_set

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10


def test_each_smsc_takes_the_flags_as_defaults_and_its_own_settings_over_them():
    defaults = SimulatorConfig(port=0, receipt_delay=0.5, first_message_id=7)
    smscs = read_smsc_set(
        json.dumps(
            [
                {"name": "eu", "system_id": "eu-user", "password": "eu-pw"},
                {"name": "us", "system_id": "us-user", "receipt_delay": "2", "error_rate": 0.1},
            ]
        ),
        defaults,
    )
    assert list(smscs) == ["eu", "us"]
    assert (smscs["eu"].system_id, smscs["eu"].password, smscs["eu"].receipt_delay) == (
        "eu-user",
        "eu-pw",
        0.5,
    )
    assert (smscs["us"].receipt_delay, smscs["us"].error_rate) == (2.0, 0.1)
    # Ids from one counter start: the same ids from two SMSCs, as real ones give.
    assert smscs["eu"].first_message_id == smscs["us"].first_message_id == 7


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "not JSON"),
        ("[]", "non-empty JSON list"),
        ('{"name": "eu"}', "non-empty JSON list"),
        ("[1]", "SMSC 1: an object is expected"),
        ('[{"port": 1}]', "SMSC 1: a name is needed"),
        ('[{"name": "a b"}]', "SMSC 1: a name is needed"),
        ('[{"name": "eu"}, {"name": "eu"}]', "SMSC 2: the name 'eu' is taken"),
        ('[{"name": "eu", "colour": "red"}]', "SMSC 'eu': unknown simulator settings: colour"),
        ('[{"name": "eu", "error_rate": 2}]', "SMSC 'eu': error_rate must be between 0 and 1"),
        ('[{"name": "eu", "receipt_delay": "soon"}]', "SMSC 'eu':"),
        (
            '[{"name": "eu", "port": 2800}, {"name": "us", "port": 2800}]',
            "SMSCs 'eu' and 'us' both want port 2800",
        ),
    ],
)
def test_a_bad_file_is_refused_saying_which_smsc_and_why(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        read_smsc_set(text, SimulatorConfig(port=0))


def _bind_and_submit(port: int, system_id: str, password: str) -> tuple[int, str | None]:
    """bind_transceiver's status and, once bound, the id the SMSC gives a submit."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(encode_pdu("bind_transceiver", 1, system_id=system_id, password=password))
        status = decode_pdu(sock.recv(4096)).status
        if status != 0:
            return status, None
        sock.sendall(encode_pdu("submit_sm", 2, destination_addr="4917012345", short_message=b"w"))
        response = decode_pdu(sock.recv(4096))
        return status, as_text(response.message_id)


def test_two_smscs_in_one_process_each_with_its_credentials_and_ids(tmp_path):
    smscs = tmp_path / "smscs.json"
    smscs.write_text(
        json.dumps(
            [
                {"name": "eu", "system_id": "eu-user", "password": "eu-pw"},
                {"name": "us", "system_id": "us-user", "password": "us-pw", "id_style": "uuid"},
            ]
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SMSAPI_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "manage.py", "smsc_simulator", "--port", "0", "--smscs", str(smscs)]
    process = subprocess.Popen(
        [*command, "--first-message-id", "500"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ports = {}
        for _ in range(2):
            line = process.stdout.readline()
            match = re.fullmatch(r"SMSC simulator (\w+) listening on 127\.0\.0\.1:(\d+)\n", line)
            assert match, line + (process.stderr.read() if process.poll() is not None else "")
            ports[match[1]] = int(match[2])
        assert sorted(ports) == ["eu", "us"] and ports["eu"] != ports["us"]

        assert _bind_and_submit(ports["eu"], "eu-user", "eu-pw") == (0, "500")
        assert _bind_and_submit(ports["eu"], "eu-user", "eu-pw") == (0, "501")
        status, us_id = _bind_and_submit(ports["us"], "us-user", "us-pw")
        assert status == 0 and re.fullmatch(r"[0-9a-f-]{36}", us_id)  # its own id style
        assert _bind_and_submit(ports["us"], "eu-user", "eu-pw")[0] == 0x0F  # ESME_RINVSYSID

        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT * 2) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_file_that_cannot_be_read_or_is_wrong_stops_the_command_with_its_reason(tmp_path):
    env = {**os.environ, "SMSAPI_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "eu", "colour": "red"}]')
    for path, reason in ((tmp_path / "none.json", "cannot read"), (bad, "unknown simulator")):
        done = subprocess.run(
            [sys.executable, "manage.py", "smsc_simulator", "--smscs", str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 3,
        )
        assert done.returncode != 0
        assert reason in done.stderr
