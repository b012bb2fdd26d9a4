"""HTTP to the ingest: one keep-alive session, gzip, a total deadline and a capped reply.

requests (and through it urllib3 and ``ssl``) is imported when the first session is made, on the
delivery thread: never while ``opentelemetry-instrument`` starts the process, before gevent or
eventlet patch ``ssl`` (see :mod:`beacon_otel.delivery.transports.guarded`). Under auto-run that
first import also waits until ``sitecustomize`` has run: two threads importing one package
(one ``requests``, the other ``requests.auth``) can each find the other's half-made module,
and the instrumentation of requests then failed, with all of OpenTelemetry's auto-init.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)

from beacon_otel.config.endpoint import shown_url
from beacon_otel.delivery.outcome import (
    MAX_RETRY_AFTER,
    FailureKind,
    Outcome,
    Verdict,
    failure_outcome,
    http_outcome,
    parse_retry_after,
    verdict_for_status,
)
from beacon_otel.delivery.transports.deadline import RequestDeadline
from beacon_otel.version import __version__

if TYPE_CHECKING:
    import requests
    import urllib3

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_RETRY_AFTER",
    "FailureKind",
    "InMemoryTransport",
    "IngestTransport",
    "Outcome",
    "Verdict",
    "parse_retry_after",
    "verdict_for_status",
]

START_UP_WAIT = 30.0
"""The most the first session waits for ``opentelemetry-instrument``'s start-up to end."""


def wait_for_start_up(limit: float = START_UP_WAIT) -> None:
    """Return once the process is past ``sitecustomize``, where opentelemetry-instrument starts it.

    While it runs, the instrumentors are being loaded on the main thread, and the requests
    instrumentation imports requests: importing it here at the same time could leave either side a
    half-made module. Outside auto-run (or once it is done) nothing waits.
    """
    deadline = time.monotonic() + limit
    while _initializing(sys.modules.get("sitecustomize")) and time.monotonic() < deadline:
        time.sleep(0.01)


def _initializing(module: object) -> bool:
    # importlib marks a module's spec as initializing while the module's code runs.
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


MAX_REPLY_BYTES = 4096
"""The most of any reply body that is read: enough for an error message, whatever comes."""
DRY_RUN_KEEPS = 10_000
"""The most events a dry run keeps in memory; older ones are forgotten (and counted)."""


class IngestTransport:
    """POSTs encoded batches to the ingest over one keep-alive ``requests.Session``'s connection pool."""

    def __init__(
        self,
        *,
        url: str,
        key: str,
        timeout: float,
        compression: bool = False,
        allow_private: bool = False,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._compression = compression
        self._headers = {
            **dict(extra_headers or {}),
            "Content-Type": "application/json",
            "User-Agent": f"beacon-otel/{__version__}",
        }
        if compression:
            self._headers["Content-Encoding"] = "gzip"
        self._key = key
        self._auth = _BearerAuth(key)
        self._allow_private = allow_private
        self._deadline = RequestDeadline()
        self._session: requests.Session | None = None
        self._route: _Route | None = None

    def send(self, body: bytes, batch_id: str) -> Outcome:
        """One attempt at batch ``batch_id``; never raises (every failure is an ``Outcome``).

        ``batch_id`` is sent as ``Idempotency-Key``: the same for every attempt at one batch,
        so an ingest that honours it stores a resent batch once. The whole request (connect,
        send, headers, body) takes at most ``timeout`` seconds.
        """
        if self._compression:
            body = gzip.compress(body, compresslevel=6)
        route = self._route
        if route is None:
            try:
                route = self._new_route()
            except Exception as exc:  # a URL urllib3 cannot take, say: an outcome, as for any failure
                return failure_outcome(exc, host=self._host(), timeout=self._timeout, timed_out=False)
        headers = {**route.headers, "Content-Length": str(len(body)), "Idempotency-Key": batch_id}
        self._deadline.start(self._timeout)
        try:
            # Our own HTTP call must not become a span (requests/urllib3 instrumentation).
            with suppress_instrumentation(), suppress_http_instrumentation():
                return self._exchange(route, body, headers)
        finally:
            self._deadline.stop()

    def _exchange(self, route: _Route, body: bytes, headers: dict[str, str]) -> Outcome:
        try:
            # What requests' adapter does for this request, less what it would work out again
            # each time (the pool, the URL, TLS settings, the timeout): see _new_route.
            response = route.pool.urlopen(
                "POST",
                route.target,
                body=body,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,  # the body is read here, capped
                decode_content=False,
                retries=route.retries,
                timeout=route.timeout,
                chunked=False,
            )
        except Exception as exc:  # every failure to get an answer becomes an outcome
            self._route = None  # worked out again next time (a pool closed under us, say)
            # The DNS message names the host alone: a port is not what failed to resolve.
            host = urlsplit(self._url).hostname or ""
            return failure_outcome(exc, host=host, timeout=self._timeout, timed_out=self._deadline.expired)
        if self._deadline.expired:
            # Cut short while the headers came in: http.client takes the shut-down socket's
            # end for the end of the headers, so the answer seen is not the ingest's.
            _close(response)
            return failure_outcome(TimeoutError(), host=self._host(), timeout=self._timeout, timed_out=True)
        status = response.status
        retry_after = None
        if verdict_for_status(status) is Verdict.RETRY:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        reply = _capped_reply(response)
        return http_outcome(
            status,
            url=shown_url(self._url),
            host=self._host(),
            reply=reply,
            retry_after=retry_after,
            secret=self._key,
        )

    def reset(self) -> None:
        """Forget the session (after fork: a socket must never be shared with the parent)."""
        self._session = self._route = None
        self._deadline = RequestDeadline()

    def close(self) -> None:
        """Close the session's pooled connections."""
        session, self._session, self._route = self._session, None, None
        if session is not None:
            session.close()
        self._deadline.close()

    def _host(self) -> str:
        parts = urlsplit(self._url)
        return parts.netloc.rpartition("@")[2]

    def _new_session(self) -> requests.Session:
        wait_for_start_up()
        import requests.utils  # here, not at start-up: see the module's docstring

        from beacon_otel.delivery.transports.guarded import GuardedAdapter

        session = requests.Session()
        adapter = GuardedAdapter(allow_private=self._allow_private, deadline=self._deadline)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # Proxy and CA settings from the environment are read once here, not on every POST
        # (requests scans the whole environment per request otherwise); with trust_env off,
        # ~/.netrc credentials can never replace our key either. Plain http goes only to this
        # machine (loopback), so never through a proxy.
        if urlsplit(self._url).scheme == "https":
            session.proxies = requests.utils.get_environ_proxies(self._url)
        session.verify = ca_certificates(os.environ)
        session.trust_env = False
        session.auth = self._auth
        self._session = session
        return session

    def _new_route(self) -> _Route:
        """The connection pool, target and headers of every POST, worked out once per session.

        Every POST is the same request but for its body, so what requests' ``Session.send``
        and its adapter work out per request (merged settings and headers, auth, the proxy,
        the pool, TLS settings, the URL) is done once, here, by requests itself; each POST then
        goes straight to the pool. That is half the client's instructions per POST.
        """
        session = self._session or self._new_session()  # first: it waits for start-up to end
        from requests import Request  # after start-up, as the session's imports (module docstring)
        from requests.adapters import HTTPAdapter
        from urllib3.util import Timeout

        template = session.prepare_request(Request("POST", self._url, headers=self._headers))
        adapter = session.get_adapter(self._url)
        assert isinstance(adapter, HTTPAdapter)  # the GuardedAdapter mounted by _new_session
        with_tls = getattr(adapter, "get_connection_with_tls_context", None)
        if with_tls is not None:
            pool = with_tls(template, session.verify, proxies=session.proxies)
        else:  # requests before 2.32.2 (the TLS settings then come from cert_verify alone)
            pool = adapter.get_connection(self._url, session.proxies)
        adapter.cert_verify(pool, self._url, session.verify, None)
        self._route = route = _Route(
            pool=pool,
            target=adapter.request_url(template, session.proxies),
            headers={str(name): str(value) for name, value in template.headers.items()},
            retries=adapter.max_retries,
            timeout=Timeout(connect=self._timeout, read=self._timeout),
        )
        return route


def ca_certificates(environ: Mapping[str, str]) -> bool | str:
    """The CA bundle or directory to verify against: requests', curl's, then OpenSSL's variables."""
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        value = environ.get(variable, "").strip()
        if value:
            return value
    return True


@dataclass(frozen=True)
class _Route:
    """Where and how every POST of one session goes: the pool, what to ask it, the fixed headers."""

    pool: urllib3.HTTPConnectionPool
    target: str
    """The request target: the path, or the whole URL through a plain-http proxy."""
    headers: dict[str, str]
    """Content type, user agent, the Authorization header and requests' defaults."""
    retries: urllib3.Retry
    timeout: urllib3.Timeout


def _capped_reply(response: urllib3.BaseHTTPResponse) -> str:
    """At most ``MAX_REPLY_BYTES`` of the body, decoded; the connection is kept only if all was read."""
    head = b""
    try:
        head = response.read(MAX_REPLY_BYTES + 1, decode_content=False)
    except Exception:
        head = b""  # a reply cut short (deadline, reset) still has its status
    finally:
        _close(response)
    head = head[:MAX_REPLY_BYTES]
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "deflate"):
        try:
            head = zlib.decompressobj(wbits=47).decompress(head, MAX_REPLY_BYTES)
        except zlib.error:
            return ""
    return head.decode("utf-8", "replace")


def _close(response: urllib3.BaseHTTPResponse) -> None:
    # As requests' Response.close: unread bytes would poison a reused connection, so it is
    # closed unless the body was all read (after a complete read urllib3 has already put the
    # connection back in the pool); either way the pool gets its slot back.
    response.close()
    response.release_conn()


class _BearerAuth:
    """``Authorization: Bearer <ingest key>``, kept out of reprs and logs (a requests auth callable)."""

    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class InMemoryTransport:
    """The dry-run sink: batches are kept in memory, nothing leaves the process.

    It keeps the newest ``keep`` events: a dry run left on in a long-running server (console mode)
    must not grow the process without bound. Older batches are forgotten whole, and counted.
    """

    def __init__(self, keep: int = DRY_RUN_KEEPS) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._kept = 0
        self.batches: collections.deque[list[dict[str, Any]]] = collections.deque()
        self.forgotten = 0
        """Events dropped from memory to respect ``keep`` (they were never going anywhere)."""

    def send(self, body: bytes, batch_id: str) -> Outcome:
        """Keep one batch, decoded from exactly the bytes that would have been sent."""
        events = json.loads(body)["events"]
        with self._lock:
            self.batches.append(events)
            self._kept += len(events)
            while self._kept > self._keep and len(self.batches) > 1:
                oldest = self.batches.popleft()
                self._kept -= len(oldest)
                self.forgotten += len(oldest)
        return Outcome(Verdict.ACCEPTED, status=202)

    def events(self) -> list[dict[str, Any]]:
        """Every event kept so far, oldest first."""
        with self._lock:
            return [event for batch in self.batches for event in batch]

    def clear(self) -> None:
        """Forget what was kept."""
        with self._lock:
            self.batches.clear()
            self._kept = 0

    def close(self) -> None:
        """Nothing to release."""

    def reset(self) -> None:
        """Nothing to rebuild after fork."""
