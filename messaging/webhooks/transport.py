"""The webhook sender's HTTP transport: it connects only where the address policy allows.

Built on httpcore's public extension point, a network backend
(``httpcore.AsyncNetworkBackend``, given to ``httpcore.AsyncConnectionPool``):
httpcore asks the backend for a TCP connection to the URL's host and port, then
does TLS itself with the URL's host name as SNI and for the certificate check.
``GuardedNetworkBackend`` resolves the name once, checks every address it
resolves to (``webhook_targets.address_refusal``) and connects to a checked
address. So

- a name that resolves to an internal address is refused before any packet is sent;
- there is no second resolution for a DNS-rebinding answer to slip into;
- the Host header and the TLS name stay the URL's host (httpcore builds them from
  the URL, not from the address connected to).

``GuardedTransport`` is the ``httpx`` transport around that pool: one pool for the
sender's life, so connections are reused as with httpx's own transport. With an
HTTP(S) proxy in the environment (``HTTPS_PROXY``...), the proxy makes the
connection and must enforce the policy itself; the sender then refuses only what
the URL itself names (a literal internal address, ``localhost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
import typing
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import httpcore
import httpx

from messaging.webhooks.targets import (
    DestinationRefused,
    IPAddress,
    address_refusal,
    host_refusal,
    is_local_name,
    parse_address,
)

# host, port -> the addresses the name resolves to, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]
# An address -> why it is refused, or None (``webhook_targets.address_refusal``).
Policy = Callable[[IPAddress], "str | None"]


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (``getaddrinfo``), in its order."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror: no such name, resolver down...
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects to a host only at an address the policy allows (see the module doc).

    ``allow_private`` (``WEBHOOK_ALLOW_PRIVATE``) skips the check but keeps the
    same path (resolve once, connect to the address), so tests on loopback run
    the code production runs. ``resolver`` and ``policy`` are the system's
    resolver and ``address_refusal`` unless a test gives its own.
    """

    def __init__(
        self,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        policy: Policy = address_refusal,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver or system_resolver
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; DestinationRefused when any
        address it resolves to is refused (a name with one internal address is not used)."""
        literal = parse_address(host)
        if literal is not None:
            # Written in the URL (perhaps as 2130706433): it cannot change, no retry helps.
            candidates, permanent = [str(literal)], True
        else:
            # localhost is loopback by definition: refused for good once it resolves so.
            candidates, permanent = await self.resolver(host, port), is_local_name(host)
        if not candidates:
            raise httpcore.ConnectError(f"{host} has no address")
        if not self.allow_private:
            for candidate in candidates:
                reason = self.policy(ipaddress.ip_address(candidate))
                if reason is not None:
                    raise DestinationRefused(
                        host, f"{candidate} is a {reason} address", permanent=permanent
                    )
        return candidates

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                candidates = await self.addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from None
        # In the resolver's order; what time is left is shared among the addresses
        # left, so one that does not answer leaves time for the next.
        failure: Exception | None = None
        for index, address in enumerate(candidates):
            left = None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic()) / (len(candidates) - index)
            try:
                return await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=left,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused(path, "webhooks never use Unix sockets", permanent=True)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


# --- proxies from the environment -----------------------------------------------------------


class EnvironmentProxies:
    """``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``, as httpx reads them
    (a custom transport turns httpx's own reading off). ``NO_PROXY``: ``*``, host
    names (``example.com`` is it and its subdomains, ``.example.com`` the
    subdomains only), addresses and networks (``10.0.0.0/8``)."""

    def __init__(self, proxies: dict[str, str]) -> None:
        self.by_scheme = {
            scheme: url if "://" in url else f"http://{url}"
            for scheme, url in proxies.items()
            if scheme in ("http", "https", "all") and url
        }
        self.bypass = [entry.strip().lower() for entry in proxies.get("no", "").split(",")]
        self.bypass = [entry for entry in self.bypass if entry]

    @classmethod
    def from_environment(cls) -> EnvironmentProxies:
        return cls(urllib.request.getproxies())

    def bypassed(self, host: str) -> bool:
        """Whether ``NO_PROXY`` sends ``host`` direct."""
        host = host.lower().rstrip(".")
        address = parse_address(host)
        for entry in self.bypass:
            if entry == "*":
                return True
            if address is not None:
                with contextlib.suppress(ValueError):
                    if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                        return True
                continue
            if entry.startswith("."):
                if host.endswith(entry):
                    return True
            elif host == entry or host.endswith("." + entry):
                return True
        return False

    def proxy_for(self, scheme: str, host: str) -> str | None:
        """The proxy URL for a request, or None to connect direct."""
        proxy = self.by_scheme.get(scheme) or self.by_scheme.get("all")
        if proxy is None or self.bypassed(host):
            return None
        return proxy


# --- the transport ----------------------------------------------------------------------------

# httpcore's exceptions as httpx's (the same mapping httpx's own transport makes),
# so a failed attempt reads "ConnectError: ..." as it always did.
_HTTPX_ERRORS: dict[type[Exception], type[Exception]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            if cls in _HTTPX_ERRORS:
                raise _HTTPX_ERRORS[cls](str(exc)) from exc
        raise  # DestinationRefused and anything not httpcore's, as it is


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose direct connections go through ``GuardedNetworkBackend``.

    ``limits`` as httpx's (``max_connections`` bounds the pool). ``proxies``:
    default, from the environment. ``ssl_context``: default, httpx's (certifi, or
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``). ``resolver``, ``policy``: see
    ``GuardedNetworkBackend``.
    """

    def __init__(
        self,
        limits: httpx.Limits,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        ssl_context: typing.Any = None,
        proxies: EnvironmentProxies | None = None,
        policy: Policy = address_refusal,
    ) -> None:
        self.allow_private = allow_private
        self.limits = limits
        self.ssl_context = ssl_context or httpx.create_ssl_context()
        self.proxies = proxies if proxies is not None else EnvironmentProxies.from_environment()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self.ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(allow_private, resolver, policy),
        )
        self._proxied: dict[str, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self.proxies.proxy_for(request.url.scheme, request.url.host)
        if proxy is not None:
            return await self._through_proxy(proxy, request)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(typing.cast(typing.AsyncIterable[bytes], response.stream)),
            extensions=response.extensions,
        )

    async def _through_proxy(self, proxy: str, request: httpx.Request) -> httpx.Response:
        """The proxy connects (and must refuse internal destinations); here only what
        the URL itself names is refused."""
        if not self.allow_private:
            reason = host_refusal(request.url.host)
            if reason is not None:
                raise DestinationRefused(
                    request.url.host, f"it is a {reason} address", permanent=True
                )
        transport = self._proxied.get(proxy)
        if transport is None:
            transport = self._proxied[proxy] = httpx.AsyncHTTPTransport(
                verify=self.ssl_context, limits=self.limits, proxy=proxy
            )
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._pool.aclose()
        for transport in self._proxied.values():
            await transport.aclose()
