"""Where events may be sent: the ingest URL's rules, and the addresses a connection may reach.

An ingest URL usually comes from the environment. If an attacker (or a typo) can point it at
a cloud metadata service or an internal host, every batch and the ingest key go there. So the
address is checked after DNS resolution, at connect time, for every new connection: a name that
resolves to a private address is refused as surely as the literal address, and a DNS answer
that changes after startup (rebinding) is caught too. Plain http is allowed only when the
address actually connected to is loopback: the key never crosses a network in clear. The
connections that apply these rules are :mod:`beacon_otel.delivery.transports.guarded`'s.

Through an HTTPS proxy the proxy resolves the ingest host (it may be the only one that can):
then what can be checked here is checked (an IP literal host, the URL's rules) and the proxy's
own address is the user's choice.

This module imports nothing but the standard library's address and URL parsing: the settings are
read at start-up, before gevent or eventlet patch ``ssl`` (see ``guarded``).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

INGEST_PATH = "/v1/ingest"
ALLOW_PRIVATE_SETTING = "allow_private_endpoints (BEACON_ALLOW_PRIVATE_ENDPOINTS)"

# Not covered by ipaddress' is_private on every supported Python: carrier-grade NAT, which
# also hosts Alibaba Cloud's metadata service (100.100.100.200).
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# NAT64's well-known prefix: the last 32 bits are the IPv4 address reached (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EndpointRefused(Exception):
    """beacon-otel's endpoint guard refused a connection; nothing was sent."""


class IngestUrlError(ValueError):
    """An ingest URL beacon-otel will not use; ``expected`` says what it must be."""

    def __init__(self, expected: str, shown: str) -> None:
        super().__init__(f"expected {expected}, got {shown!r}")
        self.expected = expected
        self.shown = shown
        """The URL as it may be shown: no credentials, no query string."""


@dataclass(frozen=True, slots=True)
class AddressProblem:
    """Why an address is off limits, and whether the private-network opt-in would allow it."""

    text: str
    opt_in_helps: bool

    def __str__(self) -> str:
        return self.text


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form reaches: IPv4-mapped, 6to4 or NAT64; else ``None``."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress, *, allow_private: bool) -> AddressProblem | None:
    """Why events must not go to ``address``, or ``None`` when they may."""
    address = embedded_ipv4(address) or address
    if address.is_loopback:
        return None  # a local ingest (dev ingest, sidecar) on this machine
    if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved:
        # Link-local holds the cloud metadata services (169.254.169.254): never an ingest,
        # whatever the settings, so no setting is suggested.
        return AddressProblem("a link-local, multicast or reserved address, never an ingest", False)
    if address.is_private or address in _CGNAT:
        return None if allow_private else AddressProblem("a private network address", True)
    if not address.is_global:
        return None if allow_private else AddressProblem("a non-public address", True)
    return None


def is_loopback_address(address: IPAddress) -> bool:
    """True for 127/8, ::1 and their IPv4-mapped forms."""
    return (embedded_ipv4(address) or address).is_loopback


def refusal(host: str, address: object, problem: AddressProblem) -> str:
    """The guard's words for a refused address: what, why, and the setting only if it helps."""
    text = f"refused by beacon-otel's endpoint guard: ingest host {host!r} is {address}, {problem}"
    if host == str(address):
        text = f"refused by beacon-otel's endpoint guard: ingest host {host} is {problem}"
    if problem.opt_in_helps:
        text += f"; set {ALLOW_PRIVATE_SETTING} for a self-hosted ingest on an internal network"
    return text


def literal_problem(host: str, *, allow_private: bool) -> AddressProblem | None:
    """The problem with ``host`` if it is an IP literal; names are checked when resolved."""
    address = _ip_literal(host)
    return None if address is None else address_problem(address, allow_private=allow_private)


def checked_addresses(host: str, port: int, *, allow_private: bool, loopback_only: bool = False) -> list[Any]:
    """``getaddrinfo`` results for ``host``, refusing the lot if any address is off limits."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if loopback_only and not is_loopback_address(address):
            raise EndpointRefused(
                f"refused by beacon-otel's endpoint guard: plain http is allowed only to this "
                f"machine, and ingest host {host!r} resolves to {address}; use https"
            )
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise EndpointRefused(refusal(host, address, problem))
    return infos


# -- the ingest URL ------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` names and loopback IP literals: the only hosts allowed plain HTTP.

    A name is only a promise: connections over http also check the address (see above).
    """
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return True
    address = _ip_literal(host)
    return address is not None and is_loopback_address(address)


def normalize_ingest_url(url: object, *, allow_private: bool = False) -> str:
    """The full ingest endpoint for a full or base URL; raises ``IngestUrlError`` if unsafe."""
    if not isinstance(url, str) or not url.strip():
        raise IngestUrlError("an http(s) URL", repr(url) if not isinstance(url, str) else url)
    parts = urlsplit(url.strip())
    shown = shown_url(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise IngestUrlError("an http(s) URL", shown)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        # urlsplit checks the port only when asked; an invalid one failed every POST later.
        raise IngestUrlError("a URL whose port, if any, is 1 to 65535", shown_url_with_port(url.strip()))
    if parts.username or parts.password:
        # Credentials in a URL end up in logs and proxies; the key travels in a header instead.
        raise IngestUrlError("a URL carrying no credentials", shown)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise IngestUrlError("an https URL (plain http is allowed only for localhost)", shown)
    problem = literal_problem(parts.hostname, allow_private=allow_private)
    if problem:
        advice = f"; set {ALLOW_PRIVATE_SETTING} for an internal network" if problem.opt_in_helps else ""
        raise IngestUrlError(f"a public or loopback host, not {problem}{advice}", shown)
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def shown_url_with_port(url: str) -> str:
    """``url`` as ``shown_url`` shows it, keeping a port it cannot parse (to say what is wrong)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, "", ""))


def shown_url(url: str) -> str:
    """``url`` as errors and logs may show it: no userinfo, no query string, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(SplitResult(parts.scheme, host + port, parts.path, "", ""))


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
