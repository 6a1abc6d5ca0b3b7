"""TLS: HTTPS from ``manage.py serve`` (with and without client certificates), and
the worker's TLS link to the SMSC with its certificate checks.

Every certificate is made for the test (``tls_certs``); the clients are Python's
own ``ssl`` and ``http.client``, the server a real ``manage.py serve`` process.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from messaging.models import LinkStatus
from smpp_gateway.simulator import SimulatorConfig
from smpp_gateway.simulator.thread import SimulatorThread
from tests.conftest import ROOT, free_port, wait_until
from tests.tls_certs import Issued, issue, make_ca


@pytest.fixture
def pki(tmp_path) -> dict[str, Issued]:
    """A server CA and its server certificate, a client CA and its client, and a stranger."""
    server_ca = make_ca(tmp_path, "Server CA")
    client_ca = make_ca(tmp_path, "Client CA")
    other_ca = make_ca(tmp_path, "Other CA")
    return {
        "server_ca": server_ca,
        "server": issue(server_ca, tmp_path, "server"),
        "client_ca": client_ca,
        "client": issue(client_ca, tmp_path, "client", client=True),
        "stranger": issue(other_ca, tmp_path, "stranger", client=True),
        "impostor": issue(other_ca, tmp_path, "impostor"),  # a server cert of another CA
    }


# --- HTTPS ---------------------------------------------------------------------------------


def client_context(ca: Issued, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def get(port: int, context: ssl.SSLContext, path: str = "/healthz") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def serve(tmp_path: Path, pki: dict[str, Issued], *extra: str) -> Iterator[dict[str, int]]:
    """``manage.py serve`` with HTTPS, HTTP only (no worker, no webhook sender)."""
    ports = {"http": free_port(), "https": free_port()}
    log_path = tmp_path / f"serve-{ports['https']}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve",
                "--no-worker",
                "--no-webhooks",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["http"]),
                "--https-port",
                str(ports["https"]),
                *extra,
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "SMSAPI_DATA_DIR": str(tmp_path),
                "HTTPS_CERT": str(pki["server"].cert),
                "HTTPS_KEY": str(pki["server"].key),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # until the TLS port takes connections
            if process.poll() is not None:
                pytest.fail(f"serve exited:\n{log_path.read_text()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", ports["https"]), timeout=1).close()
                break
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not listen:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield ports
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_https_serves_with_the_configured_certificate(tmp_path, pki):
    with serve(tmp_path, pki) as ports:
        status, body = get(ports["https"], client_context(pki["server_ca"]))
        assert status == 200 and b'"ok"' in body
        # It is our certificate: a client that trusts another CA refuses it.
        with pytest.raises(ssl.SSLCertVerificationError):
            get(ports["https"], client_context(pki["client_ca"]))
        # Plain HTTP stays on its own port.
        conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()


def test_with_a_client_ca_only_clients_with_its_certificates_get_in(tmp_path, pki):
    with serve(
        tmp_path, pki, "--https-client-ca", str(pki["client_ca"].cert), "--no-http"
    ) as ports:
        status, _ = get(ports["https"], client_context(pki["server_ca"], pki["client"]))
        assert status == 200
        for refused in (None, pki["stranger"]):  # no certificate; one of another CA
            with pytest.raises((ssl.SSLError, ConnectionError)):
                get(ports["https"], client_context(pki["server_ca"], refused))
        with pytest.raises(ConnectionRefusedError):  # --no-http: HTTPS only
            socket.create_connection(("127.0.0.1", ports["http"]), timeout=5)


# --- TLS to the SMSC ---------------------------------------------------------------------------


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_the_worker_binds_over_tls_to_an_smsc_whose_certificate_checks_out(pki, start_worker):
    config = SimulatorConfig(
        port=0, tls_cert=str(pki["server"].cert), tls_key=str(pki["server"].key)
    )
    with SimulatorThread(config) as smsc:
        start_worker(smsc.port, SMPP_TLS="true", SMPP_TLS_CA=str(pki["server_ca"].cert))
        wait_until(lambda: LinkStatus.objects.filter(state="bound").exists())
        assert smsc.stats()["binds"] == 1


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_the_worker_refuses_an_smsc_certificate_its_ca_did_not_sign(pki, start_worker):
    config = SimulatorConfig(
        port=0, tls_cert=str(pki["impostor"].cert), tls_key=str(pki["impostor"].key)
    )
    with SimulatorThread(config) as smsc:
        worker = start_worker(smsc.port, SMPP_TLS="true", SMPP_TLS_CA=str(pki["server_ca"].cert))
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in worker.output())
        assert smsc.stats()["binds"] == 0
        assert not LinkStatus.objects.filter(state="bound").exists()
