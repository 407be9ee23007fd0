"""One HTTP POST to a webhook endpoint, safe against SSRF (RELIABILITY.md WH-3).

The host name is resolved once; every address it resolves to must be public (unless the
organisation allows private ones), and the connection goes to one of those checked addresses —
never to a second lookup, so a DNS answer that changes between the check and the connect (DNS
rebinding) cannot point the request inside. TLS still verifies the certificate against the host
name (SNI and the Host header carry the name; only the socket is pinned). Redirects are never
followed: http.client does not follow them, and a 3xx is reported as a failure.
"""

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: refused even where an organisation allows private addresses.
ALWAYS_REFUSED = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
MAX_RESPONSE_BYTES = 64_000


class UnsafeUrl(ValueError):
    """The URL may not be called: a scheme other than http(s), no host, or a refused address."""


@dataclass
class Answer:
    status: int
    body: bytes
    ms: int


class PostError(Exception):
    """No answer. `sent`: the request may have reached the endpoint (timeout after sending)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to. Tests replace this (a stub resolver, no real DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_refused(address: IPAddress, *, allow_private: bool) -> str:
    """Why this address may not be called, or "" when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address in ALWAYS_REFUSED or address.is_multicast or address.is_unspecified:
        return f"{address} is never allowed"
    if address.is_global:
        return ""
    if allow_private:
        return ""
    # Loopback, RFC 1918, link-local, unique-local (fc00::/7), shared (100.64/10), reserved…
    return f"{address} is a private, loopback or link-local address"


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an endpoint URL. Raises UnsafeUrl."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("The URL must start with https:// (or http://).")
    if not parts.hostname:
        raise UnsafeUrl("The URL has no host name.")
    if parts.username or parts.password:
        raise UnsafeUrl("Put no user name or password in the URL; the signature authenticates us.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl(f"The port is not valid: {exc}") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def checked_addresses(url: str, *, allow_private: bool) -> list[str]:
    """Resolve the URL's host once and check every address. Raises UnsafeUrl."""
    _scheme, host, port, _path = split_url(url)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            raise UnsafeUrl(f"The host name {host} does not resolve ({exc}).") from exc
        if not addresses:
            raise UnsafeUrl(f"The host name {host} does not resolve.")
    for address in addresses:
        why = address_refused(ipaddress.ip_address(address.split("%")[0]), allow_private=allow_private)
        if why:
            raise UnsafeUrl(
                f"{host} resolves to {why}; webhooks may not call into private networks "
                "unless an admin allows private addresses in the organisation's settings."
            )
    return addresses


def post(url: str, *, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool) -> Answer:
    """POST `body` to `url`, connecting only to checked addresses. Raises UnsafeUrl or PostError."""
    scheme, host, port, path = split_url(url)
    addresses = checked_addresses(url, allow_private=allow_private)
    if scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def pinned(_address, timeout=None, source_address=None):
        # http.client would resolve `host` again here: connect to the checked addresses instead.
        error: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout, source_address)
            except OSError as exc:
                error = exc
        raise error or OSError("no address")

    connection._create_connection = pinned
    started = time.monotonic()
    try:
        try:
            connection.connect()  # HTTPS: the TLS handshake checks the certificate for `host`
        except OSError as exc:
            raise PostError(f"Could not connect to {host}: {exc}", sent=False) from exc
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read(MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            why = str(exc) or type(exc).__name__
            raise PostError(f"No answer from {host} after sending ({why}).", sent=True) from exc
    finally:
        connection.close()
    return Answer(status=response.status, body=answer, ms=round((time.monotonic() - started) * 1000))
