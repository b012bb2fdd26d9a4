"""Where events may be sent: refusing ingest URLs that point into private networks (SSRF).

An ingest URL usually comes from the environment. If an attacker (or a typo) can point it at
a cloud metadata service or an internal host, every batch and the ingest key go there. So the
address is checked after DNS resolution, at connect time, for every new connection: a name that
resolves to a private address is refused as surely as the literal address, and a DNS answer
that changes after startup (rebinding) is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not covered by ipaddress' is_private on every supported Python: carrier-grade NAT, which
# also hosts Alibaba Cloud's metadata service (100.100.100.200).
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class EndpointRefused(Exception):
    """The ingest host resolves to an address events must never be sent to."""


def address_problem(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why events must not go to ``address``, or ``None`` when they may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None  # a local ingest (dev ingest, sidecar) on this machine
    if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved:
        # Link-local holds the cloud metadata services (169.254.169.254): never an ingest.
        return "a link-local, multicast or reserved address"
    if address.is_private or address in _CGNAT:
        return None if allow_private else "a private network address"
    if not address.is_global:
        return None if allow_private else "a non-public address"
    return None


def literal_problem(host: str, *, allow_private: bool) -> str | None:
    """The problem with ``host`` if it is an IP literal; names are checked when resolved."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return address_problem(address, allow_private=allow_private)


def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[Any]:
    """``getaddrinfo`` results for ``host``, refusing the lot if any address is off limits."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise EndpointRefused(
                f"ingest host {host!r} resolves to {address}, {problem}; set "
                "allow_private_endpoints (BEACON_ALLOW_PRIVATE_ENDPOINTS) for a self-hosted "
                "ingest on an internal network"
            )
    return infos


class _GuardedConnectionMixin:
    """Connects only to an address that passed ``checked_addresses``."""

    allow_private = False

    def _new_conn(self) -> socket.socket:
        tunnel_host = getattr(self, "_tunnel_host", None)
        if tunnel_host:
            # Through an HTTPS proxy: the proxy is the user's choice, the ingest host is checked.
            checked_addresses(
                tunnel_host, getattr(self, "_tunnel_port", None) or 443, allow_private=self.allow_private
            )
            return super()._new_conn()  # type: ignore[misc, no-any-return]
        host, port = self._dns_host, self.port  # type: ignore[attr-defined]
        infos = checked_addresses(host, port, allow_private=self.allow_private)
        # Connect to the address just checked, not to a second, possibly different, answer;
        # TLS still verifies the certificate against the host name.
        self._dns_host = infos[0][4][0]
        try:
            return super()._new_conn()  # type: ignore[misc, no-any-return]
        finally:
            self._dns_host = host


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections refuse off-limits addresses, proxies included."""

    def __init__(self, *, allow_private: bool) -> None:
        self._pool_classes = _guarded_pool_classes(allow_private)
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = self._pool_classes
        return manager


def _guarded_pool_classes(allow_private: bool) -> dict[str, type]:
    class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
        pass

    class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
        pass

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    GuardedHTTPConnection.allow_private = allow_private
    GuardedHTTPSConnection.allow_private = allow_private
    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}
