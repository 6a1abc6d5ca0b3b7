"""HTTPS for ``manage.py serve``: a TLS listening socket for daphne, with optional
client certificates checked against a CA (what sms-api-server offered).

Daphne listens on Twisted endpoint strings, and ``ssl:`` strings cannot ask for
client certificates. So the TLS socket is opened here, with Twisted's
``CertificateOptions`` and ``SSL4ServerEndpoint``, and given daphne's own
``HTTPFactory`` once ``Server.run()`` has made it: HTTP, WebSockets and SSE
then work over TLS exactly as over TCP.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import crypto
from twisted.internet.ssl import CertificateOptions


def _certificates(path: str) -> list[crypto.X509]:
    """Every certificate of a PEM file (a chain or a CA bundle), in file order."""
    found = x509.load_pem_x509_certificates(Path(path).read_bytes())
    return [crypto.X509.from_cryptography(cert) for cert in found]


def tls_options(cert_path: str, key_path: str, client_ca_path: str = "") -> CertificateOptions:
    """TLS settings of the server: ``cert_path`` holds its certificate, then any
    intermediates; with ``client_ca_path`` every client must present a certificate
    signed by one of the CAs in that file, or the handshake fails."""
    leaf, *chain = _certificates(cert_path)
    key = crypto.PKey.from_cryptography_key(
        load_pem_private_key(Path(key_path).read_bytes(), password=None)
    )
    if not client_ca_path:
        return CertificateOptions(privateKey=key, certificate=leaf, extraCertChain=chain)
    return CertificateOptions(
        privateKey=key,
        certificate=leaf,
        extraCertChain=chain,
        verify=True,
        caCerts=_certificates(client_ca_path),
        requireCertificate=True,
    )


def listen_https(server, port: int, interface: str, options: CertificateOptions) -> None:
    """Serve daphne's ``server`` over TLS on ``port`` too.

    Call it once the reactor runs (``reactor.callWhenRunning``): daphne makes its
    HTTP factory in ``run()``. A failure to listen stops the server, as it does
    for daphne's own endpoints.
    """
    # Imported here: the reactor must be daphne's asyncio one, installed by then.
    from twisted.internet import reactor
    from twisted.internet.endpoints import SSL4ServerEndpoint

    endpoint = SSL4ServerEndpoint(reactor, port, options, interface=interface)
    listening = endpoint.listen(server.http_factory)
    listening.addCallback(server.listen_success)
    listening.addErrback(server.listen_error)
    server.listeners.append(listening)
