"""What one attempt at a batch came to, in the contract's terms and in words a user can act on."""

from __future__ import annotations

import enum
import json
import re
import socket
import sys
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from beacon_otel.config.endpoint import EndpointRefused

if TYPE_CHECKING:
    from ssl import SSLError

MAX_RETRY_AFTER = 300.0
"""An ingest asking for more than five minutes is clamped: the spool holds what waits longer."""
MAX_MESSAGE_CHARS = 200
"""How much of the ingest's own message an outcome quotes."""


class Verdict(enum.Enum):
    """What the client must do with a batch after one attempt."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # permanent: drop, count, report
    SPLIT = "split"  # 413: resend the halves
    RETRY = "retry"  # transient: back off and try again


class FailureKind(enum.Enum):
    """A stable name for each kind of failure: one log line per kind and minute, say."""

    CONNECTION_REFUSED = "connection_refused"
    CONNECTION = "connection"  # reset, closed, unreachable
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    PROXY = "proxy"
    HTTP = "http"  # an answer other than 2xx; ``Outcome.status`` says which
    ENDPOINT_GUARD = "endpoint_guard"  # refused before sending: nothing left the process
    INTERNAL = "internal"  # a bug of ours, contained


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one POST: a verdict, the HTTP status if any, the wait hint and why.

    ``detail`` is the reason in words ("connection refused", "timed out after 5 s",
    "HTTP 401 from https://host/v1/ingest: invalid key"); ``kind`` the stable name of the
    failure, ``None`` when the batch was accepted.
    """

    verdict: Verdict
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""
    kind: FailureKind | None = None

    @property
    def reason(self) -> str:
        """The reason in words (``detail``)."""
        return self.detail

    def __str__(self) -> str:
        # What log lines show: "retry: timed out after 5 s", "accepted (HTTP 202)".
        if self.detail:
            return f"{self.verdict.value}: {self.detail}"
        return self.verdict.value + (f" (HTTP {self.status})" if self.status else "")


def verdict_for_status(status: int) -> Verdict:
    """The contract's response table as a function."""
    if 200 <= status < 300:
        return Verdict.ACCEPTED
    if status == 413:
        return Verdict.SPLIT
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    # 400/401/403/404/422 and anything else unexpected (3xx: redirects are never followed).
    return Verdict.REJECTED


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), clamped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None or moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def http_outcome(
    status: int, *, url: str, host: str, reply: str, retry_after: float | None, secret: str
) -> Outcome:
    """The outcome of an HTTP answer; ``reply`` is the start of its body (already decoded)."""
    verdict = verdict_for_status(status)
    if verdict is Verdict.ACCEPTED:
        return Outcome(verdict, status=status)
    # A wrong key or a wrong path is fixed in the configuration: name the URL that was used.
    where = url if status in (401, 403, 404, 405) else host
    message = ingest_message(reply, secret=secret)
    detail = f"HTTP {status} from {where}" + (f": {message}" if message else "")
    if status in (401, 403):
        detail += " (check BEACON_INGEST_KEY)"
    elif status in (404, 405):
        detail += " (check BEACON_INGEST_URL)"
    return Outcome(verdict, status=status, retry_after=retry_after, detail=detail, kind=FailureKind.HTTP)


def ingest_message(reply: str, *, secret: str = "") -> str:
    """The ingest's message from a reply body: a JSON error field or the text, short and clean."""
    text = reply.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for name in ("error", "message", "detail", "title"):
            value = parsed.get(name)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                break
    if secret:
        text = text.replace(secret, "***")  # an ingest that echoes the key must not log it
    # Control characters could forge log lines; whitespace runs are collapsed.
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\s]+", " ", text).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return text


def failure_outcome(exc: BaseException, *, host: str, timeout: float, timed_out: bool) -> Outcome:
    """The outcome of a request that got no answer: what went wrong, in words."""
    if isinstance(exc, EndpointRefused):
        # Misconfiguration, not an outage: retrying cannot help, and nothing was sent.
        return Outcome(Verdict.REJECTED, detail=str(exc), kind=FailureKind.ENDPOINT_GUARD)
    chain = _causes(exc)
    names = {type(cause).__name__ for cause in chain}
    if timed_out or names & {
        "Timeout",
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "TimeoutError",
        "timeout",
    }:
        return _retry(f"timed out after {timeout:g} s", FailureKind.TIMEOUT)
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return _retry(f"DNS lookup failed for {host}", FailureKind.DNS)
        if isinstance(cause, ConnectionRefusedError):
            return _retry("connection refused", FailureKind.CONNECTION_REFUSED)
    if "ProxyError" in names:
        return _retry(f"proxy: {_proxy_reason(chain)}", FailureKind.PROXY)
    # ssl is looked up, not imported: imported at start-up it would stay unpatched under gevent
    # (see beacon_otel.delivery.transports.guarded), and no TLS error exists before the transport imported it.
    ssl = sys.modules.get("ssl")
    for cause in chain:
        if ssl is not None and isinstance(cause, ssl.SSLError):
            return _retry(f"TLS: {tls_reason(cause)}", FailureKind.TLS)
    if "NameResolutionError" in names:
        return _retry(f"DNS lookup failed for {host}", FailureKind.DNS)
    for cause in chain:
        if isinstance(cause, ConnectionResetError):
            return _retry("connection reset", FailureKind.CONNECTION)
    if names & {"RemoteDisconnected", "IncompleteRead", "ProtocolError"}:
        return _retry("connection closed before the reply was complete", FailureKind.CONNECTION)
    return _retry(f"connection error: {type(chain[-1]).__name__}", FailureKind.CONNECTION)


def tls_reason(error: SSLError) -> str:
    """``certificate verify failed: self-signed certificate`` rather than a tuple of codes."""
    verify_message = getattr(error, "verify_message", None)  # SSLCertVerificationError's
    if verify_message:
        return f"certificate verify failed: {verify_message}"
    if error.reason:
        return str(error.reason).lower().replace("_", " ")
    return str(error) or type(error).__name__


def _retry(detail: str, kind: FailureKind) -> Outcome:
    return Outcome(Verdict.RETRY, detail=detail, kind=kind)


def _proxy_reason(chain: list[BaseException]) -> str:
    for cause in reversed(chain):
        text = str(cause)
        match = re.search(r"Tunnel connection failed: ([^'\")]*)", text)
        if match:
            return f"tunnel refused ({match.group(1).strip()})"
    return f"unreachable ({type(chain[-1]).__name__})"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3's ``reason`` and requests' args."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if any(current is known for known in seen):
            continue
        seen.append(current)
        related = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        related += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo += [item for item in related if isinstance(item, BaseException)]
    return seen
