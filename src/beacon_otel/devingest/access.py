"""Who may use the dev ingest: the Host it answers, who may change it, who may read it.

The dev ingest runs beside a browser, and any page the developer opens can send it requests:
simple cross-site ones (a no-cors ``fetch`` POST with a text/plain body, an image load) and,
through DNS rebinding, same-origin-looking ones under a name the attacker owns. So:

- every request must name the bound address in its ``Host`` header (a rebinding page's
  requests carry the attacker's name); any port, so a port forward or a container's published
  port still reaches it;
- a request that changes state (an ingest POST, ``/v1/_faults``, ``/v1/_reset``) is refused
  when it comes from a page of another origin (``Origin``, ``Sec-Fetch-Site``), and
  ``_faults`` and ``_reset`` need ``Content-Type: application/json``, which no cross-site
  form or no-cors fetch can send;
- bound beyond loopback, every read of stored values and the test endpoints need the ingest
  key, as an ingest POST does.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass

_WILDCARDS = ("0.0.0.0", "::", "")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a --host value) is reachable from this machine only."""
    address = _ip(host.strip("[]"))
    return host.lower() == "localhost" if address is None else address.is_loopback


def split_host(value: str) -> tuple[str, int] | None:
    """A Host header's name (lower case, IPv6 without brackets) and port (80 when absent)."""
    name, port = value.strip().lower(), "80"
    if name.startswith("["):
        name, bracket, rest = name[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or port
    elif ":" in name:
        name, _, port = name.rpartition(":")
    if not name or not port.isdigit():
        return None
    return name, int(port)


@dataclass(frozen=True)
class Access:
    """The checks for one bound address (``host`` as given to --host) and ingest key."""

    host: str
    key: str | None

    @property
    def reads_need_key(self) -> bool:
        """Bound beyond loopback: stored values, faults and resets need the ingest key."""
        return not is_loopback(self.host)

    def names_us(self, name: str) -> bool:
        """Whether a Host header's name is one of the bound address's own names."""
        bound, address = self.host.lower().strip("[]"), _ip(name)
        if bound in _WILDCARDS:
            # Any of this machine's addresses: an IP literal cannot be rebound, a name can.
            return address is not None or name in ("localhost", socket.gethostname().lower())
        if (bound_address := _ip(bound)) is not None:
            return address == bound_address or (name == "localhost" and bound_address.is_loopback)
        return name == bound or (bound == "localhost" and address is not None and address.is_loopback)

    def host_problem(self, host: str | None) -> str | None:
        """Why a request's Host header does not name this dev ingest, or None."""
        if host is None:
            return None  # HTTP/1.0 clients send none; a browser always does
        parsed = split_host(host)
        if parsed is None or not self.names_us(parsed[0]):
            return f"Host {host[:100]!r} does not name this dev ingest (it answers only its own address)"
        return None

    def origin_problem(self, origin: str | None, host: str | None, fetch_site: str | None) -> str | None:
        """Why a state-changing request comes from a page of another origin, or None."""
        if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
            return f"refused: a {fetch_site[:30]!r} request (only this dev ingest's own page may change it)"
        if origin is None:
            return None  # not sent by a browser page: the client, curl, a test
        if host is None or origin.lower() != f"http://{host.strip().lower()}":
            return f"refused: Origin {origin[:100]!r} is not this dev ingest's own"
        return None

    def key_problem(self, authorization: str | None) -> str | None:
        """Why a read or test request lacks the ingest key beyond loopback, or None."""
        if not self.reads_need_key:
            return None
        given = authorization[7:] if authorization and authorization.startswith("Bearer ") else ""
        if self.key is None or not hmac.compare_digest(given.encode(), self.key.encode()):
            return "bound beyond loopback: send 'Authorization: Bearer <ingest key>' (--key)"
        return None


def json_content_type(value: str | None) -> bool:
    """Whether a Content-Type is JSON, which a cross-site form or no-cors fetch cannot send."""
    return (value or "").split(";", 1)[0].strip().lower() == "application/json"
