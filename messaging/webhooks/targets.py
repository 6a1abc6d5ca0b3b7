"""Where a webhook may be sent: the rules for callback URLs and their addresses.

A callback URL is chosen by the client, so it is hostile until checked. Two
checks, one rule:

- *Acceptance* (``clean_callback_url``): when a URL is stored (``/v1/send``'s
  ``callback_url``, a key's default URL in the admin or ``manage.py apikey``):
  http or https only, a host, no control characters, no API key kept in it and,
  unless ``WEBHOOK_ALLOW_PRIVATE``, no literal internal address (``127.0.0.1``,
  ``[::ffff:10.0.0.1]``, ``2130706433``, ``localhost``...). No DNS here: it is
  on the /v1/send path, and a name's answer can change anyway.
- *Connection* (``messaging.webhooks.transport``): the name is resolved once,
  every address it resolves to is checked with ``address_refusal``, and the
  POST connects to the checked address, so a name that answers a public
  address to the check and an internal one to the connection (DNS rebinding)
  gets nowhere. This is the real guard; acceptance only answers early.

Pure apart from reading ``WEBHOOK_ALLOW_PRIVATE``: no network, no database.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings

from messaging.url_secrets import redact_url

ALLOWED_SCHEMES = ("http", "https")
MAX_URL_LENGTH = 500  # the URL columns' max_length

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InvalidCallbackURL(ValueError):
    """A callback URL the gateway will not POST to; ``str()`` is the text for the client."""


class DestinationRefused(Exception):
    """A webhook destination the address policy refuses (no connection was made).

    ``permanent``: the URL names the address itself (a literal IP, ``localhost``),
    so trying again cannot help; a name whose answer was refused may answer
    otherwise later, and is tried again like any failed attempt.
    """

    def __init__(self, host: str, reason: str, permanent: bool) -> None:
        super().__init__(f"destination {host} refused: {reason}")
        self.host = host
        self.reason = reason
        self.permanent = permanent


# --- the address policy --------------------------------------------------------------------

# Not globally reachable (IANA special-purpose registries), named for the
# refusal. Written out rather than taken from ``ipaddress``'s is_private/is_global,
# whose answers changed between Python patch releases (3.11.10, 3.12.4).
_REFUSED_V4 = [
    (ipaddress.IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 reaches the local host
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "private"),  # carrier-grade NAT, shared address space
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),  # cloud metadata services live here
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "reserved"),  # documentation
        ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast (deprecated)
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),  # benchmarking
        ("198.51.100.0/24", "reserved"),  # documentation
        ("203.0.113.0/24", "reserved"),  # documentation
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # and 255.255.255.255, broadcast
    )
]
_REFUSED_V6 = [
    (ipaddress.IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),  # IPv4-compatible and other early forms (mapped: see below)
        ("64:ff9b:1::/48", "private"),  # local-use NAT64
        ("100::/64", "reserved"),  # discard-only
        ("2001::/32", "reserved"),  # Teredo: tunnels to an address we cannot check
        ("2001:2::/48", "reserved"),  # benchmarking
        ("2001:db8::/32", "reserved"),  # documentation
        ("3fff::/20", "reserved"),  # documentation
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # site-local (deprecated)
        ("ff00::/8", "multicast"),
    )
]
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix: the IPv4 address inside


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to ``address`` ("loopback", "private",
    "link-local", "multicast", "unspecified", "reserved"), or None when it may.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64,
    6to4) are judged by the IPv4 address they reach.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded)
        for network, reason in _REFUSED_V6:
            if address in network:
                return reason
        if address not in _GLOBAL_UNICAST_V6:
            return "reserved"  # not allocated for global unicast
        return None
    for network, reason in _REFUSED_V4:
        if address in network:
            return reason
    return None


def parse_address(text: str) -> IPAddress | None:
    """The IP address ``text`` is, in any form the system resolver would read as
    one (``127.1``, ``0x7f000001``, ``2130706433``, ``017700000001``), else None.

    Those short and numeric IPv4 forms matter: ``http://2130706433/`` is a host
    *name* to a URL parser, and 127.0.0.1 to ``getaddrinfo``.
    """
    text = text.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _INET_ATON_FORM.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


# What inet_aton may read as an address: 1 to 4 parts, each decimal, octal or hex.
_INET_ATON_FORM = re.compile(r"(?i)(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?")


def is_local_name(host: str) -> bool:
    """``localhost`` and names under ``.localhost``: loopback by definition (RFC 6761)."""
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


def host_refusal(host: str) -> str | None:
    """Why a URL naming ``host`` is refused without resolving it, or None.

    Only what the URL itself says: a literal address that is not public, or a
    loopback name. Any other name is judged at connect time, by what it resolves to.
    """
    if is_local_name(host):
        return "loopback"
    address = parse_address(host)
    return address_refusal(address) if address is not None else None


def private_allowed() -> bool:
    """``WEBHOOK_ALLOW_PRIVATE``: internal destinations allowed (development, tests)."""
    return bool(getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False))


# --- acceptance -----------------------------------------------------------------------------

# Control characters, spaces and DEL: never part of a URL we send to; some
# parsers drop them silently, so what was checked would not be what is used.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")


def clean_callback_url(url: str, allow_private: bool | None = None) -> str:
    """The URL as it is stored: checked, with any API key in it redacted.

    Raises InvalidCallbackURL with a text for the client. ``allow_private``
    defaults to ``WEBHOOK_ALLOW_PRIVATE``. An empty URL stays empty (no webhook).
    Cheap: no DNS, no database (it runs on /v1/send).
    """
    if not url:
        return url
    if len(url) > MAX_URL_LENGTH:
        raise InvalidCallbackURL(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARACTERS.search(url):
        raise InvalidCallbackURL("the callback URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when it is not a number in 0-65535
    except ValueError:
        raise InvalidCallbackURL("the callback URL is not a valid URL") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidCallbackURL("only http and https callback URLs are allowed")
    host = parts.hostname
    if not host:
        raise InvalidCallbackURL("the callback URL has no host")
    if port == 0:
        raise InvalidCallbackURL("the callback URL's port must be 1-65535")
    if not (private_allowed() if allow_private is None else allow_private):
        reason = host_refusal(host)
        if reason is not None:
            raise InvalidCallbackURL(
                f"the callback URL's host is a {reason} address; webhooks go to public addresses"
            )
    return redact_url(url)
