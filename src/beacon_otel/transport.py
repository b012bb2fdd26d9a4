"""HTTP to the ingest: one keep-alive session, gzip, and what each answer means."""

from __future__ import annotations

import enum
import gzip
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import requests.auth
import requests.utils
from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)

from beacon_otel.config import BeaconConfig
from beacon_otel.endpoint import EndpointRefused, GuardedAdapter
from beacon_otel.version import __version__

MAX_RETRY_AFTER = 300.0
"""An ingest asking for more than five minutes is clamped: the spool holds what waits longer."""
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


class Verdict(enum.Enum):
    """What the client must do with a batch after one attempt."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # permanent: drop, count, report
    SPLIT = "split"  # 413: resend the halves
    RETRY = "retry"  # transient: back off and try again


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one POST: a verdict, the HTTP status if any, and the server's wait hint."""

    verdict: Verdict
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""


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


def backoff_delay(
    attempt: int,
    *,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rand() * min(cap, base * (2 ** min(attempt, 32)))


class IngestTransport:
    """POSTs encoded batches to the ingest over one keep-alive ``requests.Session``."""

    def __init__(self, config: BeaconConfig) -> None:
        self._url = config.ingest_url
        self._timeout = config.timeout
        self._compression = config.compression
        self._headers = {
            **dict(config.extra_headers),
            "Content-Type": "application/json",
            "User-Agent": f"beacon-otel/{__version__}",
        }
        if self._compression:
            self._headers["Content-Encoding"] = "gzip"
        self._auth = _BearerAuth(config.ingest_key)
        self._allow_private = config.allow_private_endpoints
        self._session: requests.Session | None = None
        self._template: requests.PreparedRequest | None = None

    def send(self, body: bytes, batch_id: str) -> Outcome:
        """One attempt at batch ``batch_id``; never raises (every failure is an ``Outcome``).

        ``batch_id`` is sent as ``Idempotency-Key``: the same for every attempt at one batch,
        so an ingest that honours it stores a resent batch once.
        """
        if self._compression:
            body = gzip.compress(body, compresslevel=6)
        session = self._session or self._new_session()
        assert self._template is not None
        # Every POST is the same request but for its body: it is prepared once, and copied.
        # Session.post would merge settings, headers and auth again each time, which is
        # about 40% of the delivery thread's CPU per POST.
        request = self._template.copy()
        request.body = body
        request.headers["Content-Length"] = str(len(body))
        request.headers["Idempotency-Key"] = batch_id
        try:
            # Our own HTTP call must not become a span (requests/urllib3 instrumentation).
            with suppress_instrumentation(), suppress_http_instrumentation():
                response = session.send(
                    request,
                    timeout=self._timeout,
                    allow_redirects=False,
                    proxies=session.proxies,
                    verify=session.verify,
                )
        except EndpointRefused as exc:
            # Misconfiguration, not an outage: retrying cannot help, and nothing was sent.
            return Outcome(Verdict.REJECTED, detail=str(exc))
        except requests.Timeout as exc:
            return Outcome(Verdict.RETRY, detail=f"timeout: {type(exc).__name__}")
        except requests.RequestException as exc:
            return Outcome(Verdict.RETRY, detail=f"connection error: {type(exc).__name__}")
        with response:
            status = response.status_code
            verdict = verdict_for_status(status)
            retry_after = None
            if verdict is Verdict.RETRY:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            detail = "" if verdict is Verdict.ACCEPTED else response.text[:200]
        return Outcome(verdict, status=status, retry_after=retry_after, detail=detail)

    def reset(self) -> None:
        """Forget the session (after fork: a socket must never be shared with the parent)."""
        self._session = self._template = None

    def close(self) -> None:
        """Close the session's pooled connections."""
        session, self._session, self._template = self._session, None, None
        if session is not None:
            session.close()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = GuardedAdapter(allow_private=self._allow_private)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # Proxy and CA settings from the environment are read once here, not on every POST
        # (requests scans the whole environment per request otherwise); with trust_env off,
        # ~/.netrc credentials can never replace our key either.
        session.proxies = requests.utils.get_environ_proxies(self._url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        session.trust_env = False
        session.auth = self._auth
        self._template = session.prepare_request(requests.Request("POST", self._url, headers=self._headers))
        self._session = session
        return session


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <ingest key>``, kept out of reprs and logs."""

    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class InMemoryTransport:
    """The dry-run sink: batches are kept in memory, nothing leaves the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches: list[list[dict[str, Any]]] = []

    def send(self, body: bytes, batch_id: str) -> Outcome:
        """Keep one batch, decoded from exactly the bytes that would have been sent."""
        events = json.loads(body)["events"]
        with self._lock:
            self.batches.append(events)
        return Outcome(Verdict.ACCEPTED, status=202)

    def events(self) -> list[dict[str, Any]]:
        """Every event kept so far, oldest first."""
        with self._lock:
            return [event for batch in self.batches for event in batch]

    def clear(self) -> None:
        """Forget what was kept."""
        with self._lock:
            self.batches.clear()

    def close(self) -> None:
        """Nothing to release."""

    def reset(self) -> None:
        """Nothing to rebuild after fork."""
