"""Connections that apply the endpoint's rules: an off-limits address is refused at connect time.

The rules themselves (which addresses, which URLs) are :mod:`beacon_otel.config.endpoint`'s; here
they are checked for every new connection, after DNS resolution and through proxies, and each
connection is watched by the request's total deadline.

This module imports requests and urllib3, and so ``ssl`` through them: only the delivery thread
imports it, on its first send. Under gunicorn's gevent worker (or eventlet) the app is loaded
after the worker patched ``ssl``; an ``ssl`` or ``urllib3.util.ssl_`` imported earlier, while
``opentelemetry-instrument`` starts the process, keeps the unpatched ``SSLContext``, and every
HTTPS request of the app then fails with ``RecursionError``.
"""

from __future__ import annotations

import socket
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from beacon_otel.config.endpoint import EndpointRefused, checked_addresses, literal_problem, refusal
from beacon_otel.delivery.transports.deadline import RequestDeadline


class _GuardedConnectionMixin:
    """Connects only to addresses that passed ``checked_addresses``, in order; watched by a deadline."""

    allow_private = False
    deadline: RequestDeadline | None = None

    def _new_conn(self) -> socket.socket:
        tunnel_host: str | None = getattr(self, "_tunnel_host", None)
        if tunnel_host:
            # Through an HTTPS proxy: the proxy resolves the ingest host, so only a literal
            # address can be checked here; the proxy itself is the user's choice.
            problem = literal_problem(tunnel_host, allow_private=self.allow_private)
            if problem:
                raise EndpointRefused(refusal(tunnel_host, tunnel_host, problem))
            return self._watched(super()._new_conn())  # type: ignore[misc]
        host: str = self._dns_host  # type: ignore[has-type]
        port: int = self.port  # type: ignore[attr-defined]
        infos = checked_addresses(
            host,
            port,
            allow_private=self.allow_private,
            loopback_only=not isinstance(self, HTTPSConnection),
        )
        # Connect to the addresses just checked, not to a second, possibly different, answer;
        # TLS still verifies the certificate against the host name. Each in the resolver's
        # order until one connects, as urllib3 does: "localhost" is ::1 first on Debian while a
        # local ingest often listens on 127.0.0.1 only, and a container's IPv6 may be unrouted.
        failure: Exception | None = None
        for address in dict.fromkeys(str(info[4][0]) for info in infos):
            self._dns_host = address
            try:
                return self._watched(super()._new_conn())  # type: ignore[misc]
            except (NewConnectionError, ConnectTimeoutError) as exc:
                failure = exc
                if self.deadline is not None and self.deadline.expired:
                    break  # the request's time is up: no address gets a second chance
            finally:
                self._dns_host = host
        if failure is None:  # getaddrinfo answers at least one address or raises: never here
            raise OSError(f"no address for {host!r}")
        raise failure

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        # After TLS the socket to watch is the wrapped one (the plain one was detached).
        self._watched(self.sock)  # type: ignore[attr-defined]

    def _watched(self, sock: socket.socket) -> socket.socket:
        if self.deadline is not None:
            self.deadline.watch(sock)
        return sock


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections refuse off-limits addresses, proxies included."""

    def __init__(self, *, allow_private: bool, deadline: RequestDeadline | None = None) -> None:
        self._pool_classes = _guarded_pool_classes(allow_private, deadline)
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = self._pool_classes
        return manager


def _guarded_pool_classes(allow_private: bool, deadline: RequestDeadline | None) -> dict[str, type]:
    # Classes per adapter: the settings are class attributes, read by urllib3-made connections.
    class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
        pass

    class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
        pass

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    for connection in (GuardedHTTPConnection, GuardedHTTPSConnection):
        connection.allow_private = allow_private
        connection.deadline = deadline
    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}
