"""Where webhooks may go: the address policy, the callback URL rule, and the sender's
guarded connections against real HTTP(S) servers on loopback.

Loopback is exactly what the default policy refuses, so the servers here show two
things: with the default policy nothing reaches them (refused before a packet is
sent), and with ``allow_private`` the same URLs do reach them (so the refusal is
the policy, not an unreachable server). Names other than ``localhost`` are
resolved by a resolver the test gives (no DNS here); everything else is real:
sockets, HTTP, TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from messaging.events import last_event_id
from messaging.models import ApiKey, Message, WebhookCursor, WebhookDelivery
from messaging.url_secrets import loggable_url, redact_url
from messaging.webhooks import delivery as webhooks
from messaging.webhooks.attempts import AttemptResult, record_results
from messaging.webhooks.delivery import SenderConfig, WebhookSender
from messaging.webhooks.planning import Planner
from messaging.webhooks.targets import (
    DestinationRefused,
    InvalidCallbackURL,
    address_refusal,
    clean_callback_url,
    host_refusal,
    parse_address,
)
from messaging.webhooks.transport import EnvironmentProxies, GuardedTransport
from tests.conftest import wait_until
from tests.live import add_events, make_message

LIMITS = httpx.Limits(max_connections=4)
NO_PROXIES = EnvironmentProxies({})


# --- the address policy (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:10.1.2.3", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated)
        ("4000::1", "reserved"),  # outside global unicast
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("172.32.0.1", None),  # just past 172.16/12
        ("100.128.0.1", None),  # just past 100.64/10
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("2002:808:808::", None),  # 6to4 of a public address
    ],
)
def test_address_refusal(address, reason):
    assert address_refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # inet_aton's short forms: what getaddrinfo reads
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("example.com", None),
        ("1.2.3.4.example.com", None),
        ("deadbeef", None),
        ("256.256.256.256", None),
    ],
)
def test_parse_address_reads_every_form_the_resolver_would(text, address):
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("localhost", "loopback"),
        ("LOCALHOST.", "loopback"),
        ("api.localhost", "loopback"),
        ("0x7f000001", "loopback"),
        ("::ffff:192.168.0.1", "private"),
        ("example.com", None),  # names are judged by what they resolve to, at connect time
        ("localhost.example.com", None),
        ("8.8.8.8", None),
    ],
)
def test_host_refusal_judges_only_what_the_url_itself_says(host, reason):
    assert host_refusal(host) == reason


# --- the callback URL rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://example.com:70/",
        "http:///no-host",
        "https://example.com:99999/",
        "https://example.com:0/",
        "https://example.com:port/",
        "https://exa mple.com/",
        "https://example.com/\x00",
        "https://example.com/\r\nX-Injected: 1",
        "https://example.com/" + "a" * 500,
        "http://[::1",
    ],
)
def test_clean_callback_url_refuses_what_is_not_an_http_url(url):
    with pytest.raises(InvalidCallbackURL):
        clean_callback_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1/send",
        "http://localhost/hook",
        "http://LOCALHOST./hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://0.0.0.0/hook",
        "http://[::]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://[fe80::1%25eth0]/hook",
        "https://224.0.0.1/hook",
    ],
)
def test_internal_literal_addresses_are_refused_at_acceptance_unless_allowed(url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(InvalidCallbackURL, match="public addresses"):
        clean_callback_url(url)
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert clean_callback_url(url) == url


def test_clean_callback_url_keeps_a_good_url_and_redacts_an_api_key(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    assert clean_callback_url("") == ""
    assert (
        clean_callback_url("https://hooks.example.com/a?b=1") == "https://hooks.example.com/a?b=1"
    )
    assert clean_callback_url("HTTP://8.8.8.8:8080/x") == "HTTP://8.8.8.8:8080/x"
    assert (
        clean_callback_url("https://a.example/v1/send?x=1&api_key=sk_abcdefgh123&y=2")
        == "https://a.example/v1/send?x=1&api_key=REDACTED&y=2"
    )
    # A name is not resolved here (no DNS on /v1/send); connect time judges it.
    assert (
        clean_callback_url("https://internal.corp.example/x") == "https://internal.corp.example/x"
    )


def test_loggable_url_hides_keys_and_passwords():
    assert redact_url("http://h/x?API_KEY=sk_1;api_key=sk_2#f") == (
        "http://h/x?API_KEY=REDACTED;api_key=REDACTED#f"
    )
    assert loggable_url("https://user:pa55@h.example/x?api_key=sk_1") == (
        "https://user:REDACTED@h.example/x?api_key=REDACTED"
    )
    assert loggable_url("https://h.example/x?q=a@b") == "https://h.example/x?q=a@b"
    assert loggable_url("destination refused") == "destination refused"


def test_proxies_from_the_environment_follow_no_proxy():
    proxies = EnvironmentProxies(
        {
            "http": "proxy.internal:3128",
            "https": "http://proxy.internal:3128",
            "no": "example.org, .corp.example,10.0.0.0/8,::1",
        }
    )
    assert proxies.proxy_for("http", "hooks.example.com") == "http://proxy.internal:3128"
    assert proxies.proxy_for("https", "hooks.example.com") == "http://proxy.internal:3128"
    assert proxies.proxy_for("https", "example.org") is None
    assert proxies.proxy_for("https", "a.example.org") is None
    assert proxies.proxy_for("https", "wwwexample.org") == "http://proxy.internal:3128"
    assert proxies.proxy_for("https", "corp.example") == "http://proxy.internal:3128"
    assert proxies.proxy_for("https", "x.corp.example") is None
    assert proxies.proxy_for("http", "10.1.2.3") is None
    assert proxies.proxy_for("http", "::1") is None
    assert EnvironmentProxies({"all": "http://p:1", "no": "*"}).proxy_for("http", "a") is None
    assert EnvironmentProxies({"all": "http://p:1"}).proxy_for("https", "a") == "http://p:1"


# --- real servers ----------------------------------------------------------------------------


@dataclass
class Seen:
    host_header: str
    path: str
    client_port: int


@dataclass
class Receiver:
    """An HTTP/1.1 (keep-alive) server that records every POST; TLS when given a context."""

    address: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.seen.append(Seen(self.headers["Host"], self.path, self.client_address[1]))
                body = f"seen at {receiver.address}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server((self.address, self.port), Handler)
        self.port = self.server.server_port
        if self.tls is not None:
            self.tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def resolver_of(answers: dict[str, list[list[str]]], calls: list[str]):
    """A resolver giving each name its next answer (the last repeats), recording the calls."""

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return resolve


async def post(url: str, **transport) -> httpx.Response:
    """One POST through a fresh ``GuardedTransport`` (no proxy unless given)."""
    transport.setdefault("proxies", NO_PROXIES)
    async with httpx.AsyncClient(
        transport=GuardedTransport(LIMITS, **transport), follow_redirects=False
    ) as client:
        return await client.post(url, content=b"{}")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",  # a name: resolved by the system resolver, refused on its address
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
        "2130706433",  # a "name" to the URL parser, 127.0.0.1 to getaddrinfo
        "127.1",
    ],
)
async def test_by_default_loopback_is_refused_at_connect_time(receiver, host):
    url = f"http://{host}:{receiver.port}/hook"
    with pytest.raises(DestinationRefused, match="is a loopback address") as refused:
        await post(url)
    assert refused.value.permanent  # the URL names it: trying again cannot help
    assert receiver.seen == []

    # The same URL reaches the server when private destinations are allowed.
    response = await post(url, allow_private=True)
    assert response.status_code == 200 and len(receiver.seen) == 1
    assert receiver.seen[0].host_header == f"{host}:{receiver.port}"


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "169.254.169.254", "[fe80::1]", "10.0.0.1"])
async def test_other_internal_addresses_are_refused_before_connecting(host):
    # 0.0.0.0 and :: reach the local host on Linux; nothing is listening here anyway:
    # the refusal, not a failed connection, is what comes back.
    with pytest.raises(DestinationRefused, match="refused") as refused:
        await post(f"http://{host}:9/hook")
    assert refused.value.permanent


async def test_a_name_is_refused_by_every_address_it_resolves_to(receiver):
    calls: list[str] = []
    resolver = resolver_of(
        {"mixed.test": [["127.0.0.2", "127.0.0.1"]], "internal.test": [["10.9.8.7"]]}, calls
    )
    # 127.0.0.2 stands for a public address here: the policy allows only it.
    only_2 = lambda address: None if str(address) == "127.0.0.2" else "private"  # noqa: E731
    with pytest.raises(DestinationRefused, match="127.0.0.1 is a private address") as refused:
        await post(f"http://mixed.test:{receiver.port}/", resolver=resolver, policy=only_2)
    assert not refused.value.permanent  # a name: it may resolve otherwise later
    with pytest.raises(DestinationRefused, match="10.9.8.7 is a private address"):
        await post(f"http://internal.test:{receiver.port}/", resolver=resolver)
    assert receiver.seen == [] and calls == ["mixed.test", "internal.test"]


async def test_the_connection_goes_to_the_address_checked_no_dns_rebinding():
    """A name answers a "public" address (127.0.0.2, allowed by the policy given
    here) to the first lookup and an internal one (127.0.0.1) after: the POST
    reaches the checked address, the name is looked up once per connection, and
    the next connection, checked again, is refused."""
    public = Receiver(address="127.0.0.2")
    internal = Receiver(address="127.0.0.1", port=public.port)
    calls: list[str] = []
    resolver = resolver_of({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]}, calls)
    only_2 = lambda address: None if str(address) == "127.0.0.2" else "private"  # noqa: E731
    try:
        async with httpx.AsyncClient(
            transport=GuardedTransport(LIMITS, resolver=resolver, policy=only_2, proxies=NO_PROXIES)
        ) as client:
            url = f"http://rebind.test:{public.port}/hook"
            for _ in range(3):  # one connection, kept alive and reused
                assert (await client.post(url, content=b"{}")).text == "seen at 127.0.0.2"
        assert calls == ["rebind.test"]
        assert len({seen.client_port for seen in public.seen}) == 1  # the connection reused
        assert public.seen[0].host_header == f"rebind.test:{public.port}"

        with pytest.raises(DestinationRefused, match="127.0.0.1 is a private address"):
            await post(url, resolver=resolver, policy=only_2)
        assert internal.seen == [] and calls == ["rebind.test", "rebind.test"]
    finally:
        public.close()
        internal.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for ``webhook.test`` (openssl, as a receiver would make)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=webhook.test",
            "-addext",
            "subjectAltName=DNS:webhook.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_checks_the_certificate_and_sends_sni_for_the_name_not_the_address(certificate):
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = Receiver(tls=server_context)
    client_context = ssl.create_default_context(cafile=str(cert))
    calls: list[str] = []
    resolver = resolver_of({"webhook.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]}, calls)
    try:
        response = await post(
            f"https://webhook.test:{server.port}/tls",
            allow_private=True,
            resolver=resolver,
            ssl_context=client_context,
        )
        assert response.status_code == 200
        assert server.sni == ["webhook.test"]
        assert server.seen[0].host_header == f"webhook.test:{server.port}"

        # The same server under a name its certificate does not have: refused by TLS.
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            await post(
                f"https://other.test:{server.port}/tls",
                allow_private=True,
                resolver=resolver,
                ssl_context=client_context,
            )
        assert len(server.seen) == 1
    finally:
        server.close()


async def test_through_a_proxy_the_proxy_connects_and_literal_internal_hosts_are_refused(
    receiver,
):
    """The receiver plays the HTTP proxy: it is sent the absolute URL. The name is
    not resolved here (the proxy does it, and must enforce the policy itself)."""
    proxies = EnvironmentProxies({"http": f"http://127.0.0.1:{receiver.port}"})
    response = await post("http://hooks.example.com/cb", proxies=proxies)
    assert response.status_code == 200
    assert receiver.seen[0].path == "http://hooks.example.com/cb"
    with pytest.raises(DestinationRefused, match="loopback"):
        await post("http://[::ffff:127.0.0.1]:9/cb", proxies=proxies)
    assert len(receiver.seen) == 1


# --- the sender (store) ----------------------------------------------------------------------

SENDER = SenderConfig(timeout=5, max_attempts=3, backoff=(0.05,), poll_interval=0.05)


@pytest.fixture
def cursor(settings):
    """Webhooks start after the events already stored (as in tests/test_webhooks.py)."""
    settings.EVENTS_GAP_GRACE = 0.2
    WebhookCursor.objects.update_or_create(
        name="webhooks",
        defaults={"last_event_id": last_event_id(), "updated_at": timezone.now()},
    )


@contextlib.contextmanager
def running_sender(config: SenderConfig) -> Iterator[WebhookSender]:
    sender = WebhookSender(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(sender.run(),), daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        loop.call_soon_threadsafe(sender.stop)
        thread.join(20)
        loop.close()
        assert not thread.is_alive()


def receipt_to(url: str) -> Message:
    """A message whose receipts go to ``url``, stored as it is (as a URL stored
    before the policy, or under WEBHOOK_ALLOW_PRIVATE, would be)."""
    message = make_message()
    Message.objects.filter(pk=message.pk).update(callback_url=url)
    return message


def settled() -> WebhookDelivery | None:
    delivery = WebhookDelivery.objects.first()
    return delivery if delivery and delivery.state != "pending" else None


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_the_default_sender_fails_an_internal_destination_at_once_and_logs_no_key(
    receiver, cursor, caplog, host
):
    url = f"http://{host}:{receiver.port}/v1/send?api_key=sk_SECRETKEY123&x=1"
    message = receipt_to(url)
    caplog.set_level(logging.WARNING, logger="messaging.webhooks.delivery")
    with running_sender(SENDER):  # allow_private off, as by default
        add_events(1, "receipt", message=message, ring=False)
        delivery = wait_until(settled)
    assert receiver.seen == []
    assert delivery.state == "failed" and delivery.attempts == 1  # not tried again
    assert delivery.last_status is None and "is a loopback address" in delivery.last_error
    (attempt,) = delivery.attempt_log.all()
    assert "refused" in attempt.error
    (line,) = [r for r in caplog.records if r.name == "messaging.webhooks.delivery"]
    assert line.levelname == "ERROR" and "is a loopback address" in line.getMessage()
    assert line.url == url.replace("sk_SECRETKEY123", "REDACTED")
    assert "sk_SECRETKEY123" not in caplog.text


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_a_refused_name_is_tried_again_a_refused_literal_is_not(cursor):
    """The choice docs/webhooks.md states: a name may resolve otherwise later."""
    first, second = receipt_to("http://a.example/"), receipt_to("http://b.example/")
    for message in (first, second):
        add_events(1, "receipt", message=message, ring=False)
    planner = Planner()  # PostgreSQL: a hole in the ids is waited for, hence a loop
    wait_until(lambda: planner.plan() >= 0 and WebhookDelivery.objects.count() == 2)
    by_url = {d.url: d for d in WebhookDelivery.objects.all()}
    now = timezone.now()
    results = [
        AttemptResult(by_url["http://a.example/"].pk, now, error="10.0.0.1 refused", final=False),
        AttemptResult(by_url["http://b.example/"].pk, now, error="127.0.0.1 refused", final=True),
    ]
    record_results(results, max_attempts=8, backoff=(10,))
    retried, failed = (WebhookDelivery.objects.get(pk=r.delivery_id) for r in results)
    assert retried.state == "pending" and retried.next_attempt_at > now
    assert failed.state == "failed" and failed.attempts == 1


def run_until_it_ends(sender: WebhookSender, timeout: float = 20) -> None:
    asyncio.run(asyncio.wait_for(sender.run(), timeout))


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_in_a_round_is_logged_and_raised_from_run(cursor, monkeypatch, caplog):
    def broken(*args):  # stands for a bug in the sender's own code
        raise RuntimeError("a bug in claiming")

    monkeypatch.setattr(webhooks, "claim_due", broken)
    with pytest.raises(RuntimeError, match="a bug in claiming"):
        run_until_it_ends(WebhookSender(SENDER))
    (line,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert line.exc_info and "a bug in claiming" in caplog.text


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_a_store_outage_is_waited_out(receiver, cursor, monkeypatch, caplog):
    real_claim, failures = webhooks.claim_due, [2]

    def flaky(*args):
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("database is locked")
        return real_claim(*args)

    monkeypatch.setattr(webhooks, "claim_due", flaky)
    message = receipt_to(f"http://127.0.0.1:{receiver.port}/after-outage")
    with running_sender(replace(SENDER, allow_private=True)):
        add_events(1, "receipt", message=message, ring=False)
        delivery = wait_until(settled)
    assert delivery.state == "delivered" and receiver.seen[0].path == "/after-outage"
    assert "store unavailable" in caplog.text and "store available again" in caplog.text


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_a_delivery_task_that_dies_is_logged_and_raised_from_run(cursor, monkeypatch, caplog):
    async def broken(*args):  # ``post`` never raises; this stands for a bug in it
        raise RuntimeError("a bug in posting")

    monkeypatch.setattr(webhooks, "post", broken)
    message = receipt_to("http://hooks.example.com/x")
    add_events(1, "receipt", message=message, ring=False)
    with pytest.raises(RuntimeError, match="a bug in posting"):
        run_until_it_ends(WebhookSender(SENDER))
    (line,) = [r for r in caplog.records if "delivery task died" in r.getMessage()]
    assert line.exc_info and line.exc_info[1].args == ("a bug in posting",)


@pytest.mark.store
@pytest.mark.django_db(transaction=True)
def test_the_incoming_url_is_stored_without_its_key_and_checked_at_start(cursor, settings, caplog):
    settings.WEBHOOK_INCOMING_URL = "http://127.0.0.1:9/mo?api_key=sk_INCOMINGKEY1"
    caplog.set_level(logging.WARNING, logger="messaging.webhooks.delivery")
    with running_sender(SENDER):
        add_events(1, "mo", ring=False)
        delivery = wait_until(settled)
    assert delivery.url == "http://127.0.0.1:9/mo?api_key=REDACTED"
    assert delivery.state == "failed" and "loopback" in delivery.last_error
    assert "WEBHOOK_INCOMING_URL http://127.0.0.1:9/mo?api_key=REDACTED" in caplog.text
    assert "sk_INCOMINGKEY1" not in caplog.text


@pytest.mark.store
@pytest.mark.django_db
def test_send_refuses_the_issues_callback_back_into_the_api(settings):
    """The case reported: a callback to the gateway's own /v1/send, with a key in it."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = APIClient().post(
        "/v1/send",
        {
            "dst": "5551234",
            "text": "x",
            "callback_url": "http://127.0.0.1:8080/v1/send?api_key=sk_abcdefgh12345",
        },
        format="json",
    )
    assert response.status_code == 400 and "public addresses" in response.json()["error"]
    assert "sk_abcdefgh12345" not in response.content.decode()
    assert not Message.objects.exists()


# --- where a key's callback URL is set ------------------------------------------------------


@pytest.mark.store
@pytest.mark.django_db
def test_the_apikey_command_holds_the_callback_url_to_the_rule(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    for bad in ("http://127.0.0.1:8080/v1/send", "ftp://a.example/", "http://localhost/x"):
        with pytest.raises(CommandError, match="--callback-url"):
            call_command("apikey", "create", "bad", "--callback-url", bad)
    assert not ApiKey.objects.exists()
    call_command(
        "apikey", "create", "ok", "--callback-url", "https://a.example/cb?api_key=sk_zzzzzzzz1"
    )
    assert ApiKey.objects.get().default_callback_url == "https://a.example/cb?api_key=REDACTED"


@pytest.mark.store
@pytest.mark.django_db
def test_the_admin_form_holds_the_callback_url_to_the_rule(settings, client, django_user_model):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "x"))
    form = {"name": "shop", "rate_limit": "0", "receive_incoming": "on"}
    refused = client.post(
        "/admin/messaging/apikey/add/",
        {**form, "default_callback_url": "http://169.254.169.254/latest"},
    )
    assert refused.status_code == 200 and "public addresses" in refused.content.decode()
    assert not ApiKey.objects.exists()
    made = client.post(
        "/admin/messaging/apikey/add/",
        {**form, "default_callback_url": "https://a.example/cb?api_key=sk_yyyyyyyy1"},
    )
    assert made.status_code == 302
    assert ApiKey.objects.get().default_callback_url == "https://a.example/cb?api_key=REDACTED"
