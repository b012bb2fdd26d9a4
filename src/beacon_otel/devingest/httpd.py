"""The HTTP side of the dev ingest: routes, request bodies, and a server that stops cleanly.

_Server tracks connections so stop() can end idle keep-alive ones without cutting off a
response it still owes, and serves at most MAX_HANDLERS of them at once; _Handler checks each
request against ``access`` (Host, Origin, content type, key) and routes it to the DevIngest
that owns the server.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib.resources
import io
import json
import re
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from beacon_otel.devingest.access import Access, json_content_type
from beacon_otel.devingest.faults import Fault
from beacon_otel.devingest.summary import Filters, View
from beacon_otel.devingest.validation import MAX_BODY_BYTES, _Refused

if TYPE_CHECKING:  # only for annotations: server.py imports this module
    from beacon_otel.devingest.server import DevIngest

INGEST_PATH = "/v1/ingest"
# Connections served at once. Each holds a thread (and up to a 10 MiB body): a burst beyond
# this is answered 503 with Retry-After, which the client retries, instead of a thread each.
MAX_HANDLERS = 32
_BUSY_BODY = b'{"error": "too many open connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
# Reads of stored values (consumers as sent, rejected payloads) and the test endpoints: beyond
# loopback they need the key.
_TEST_ENDPOINTS = frozenset({"/v1/_faults", "/v1/_reset"})
_GUARDED = frozenset({"/v1/events", "/v1/summary", "/v1/stats", "/v1/_arrivals", "/v1/_faults", "/v1/_reset"})


class _Server(ThreadingHTTPServer):
    """HTTP server that knows its DevIngest and can close idle keep-alive connections."""

    daemon_threads = False  # server_close() joins only non-daemon handlers: stop() leaves none
    request_queue_size = 128  # the default 5 drops connections when a load demo bursts

    def __init__(self, address: tuple[str, int], ingest: DevIngest) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.ingest = ingest
        self.connections: set[socket.socket] = set()
        self.answering: set[socket.socket] = set()  # connections between request and response
        self.connections_lock = threading.Lock()
        self.handler_slots = threading.BoundedSemaphore(MAX_HANDLERS)
        super().__init__(address, _Handler)
        self.access = Access(ingest.host, ingest.ingest_key)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup, which can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.handler_slots.acquire(blocking=False):
            with contextlib.suppress(OSError):  # a client that does not read gets nothing
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.handler_slots.release()  # no thread started: nothing else will
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.handler_slots.release()

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def begin_answer(self, sock: socket.socket) -> bool:
        """Claim ``sock`` until its response is sent; False once stopping has begun."""
        with self.connections_lock:
            if self.ingest.stopping:
                return False
            self.answering.add(sock)
            return True

    def end_answer(self, sock: socket.socket) -> None:
        with self.connections_lock:
            self.answering.discard(sock)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections.

        A connection that is being answered is left to finish: cutting it after the batch
        is stored but before the 202 is sent would make the client resend a batch that
        already arrived, the duplicate a real ingest's graceful shutdown never causes.
        """
        with self.connections_lock:
            for sock in self.connections - self.answering:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are normal here (timeouts, fault tests).
        pass


def discard_chunked(stream: io.BufferedIOBase, limit: int) -> None:
    """Read a chunked body up to its last chunk (``limit`` bytes of data at most) and drop it.

    A client still sending when the connection closes gets a reset, not the 400 (some, like
    urllib3 1.26, fail on the broken pipe without reading the answer).
    """
    while limit >= 0:
        try:
            size = int(stream.readline(256).split(b";", 1)[0], 16)
        except ValueError:
            return  # not chunked framing after all: the connection closes anyway
        if size == 0:
            while stream.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields, up to the blank line that ends the body
            return
        limit -= size
        while size > 0 and (data := stream.read(min(size, 1 << 20))):
            size -= len(data)
        stream.readline(256)  # the CRLF after the chunk's data


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the DevIngest that owns the server."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled session expects
    timeout = 30  # a client that announces a body and never sends it must not pin a thread
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

    def log_message(self, format: str, *args: Any) -> None:
        pass  # DevIngest reports batches itself; per-request lines are noise

    def do_GET(self) -> None:
        ingest = self.server.ingest
        path, _, raw_query = self.path.partition("?")
        if (refusal := self._refusal(path, changes=False)) is not None:
            return self._send(*refusal)
        if path in ("/", "/index.html"):
            return self._send_page(*_dashboard())
        query = urllib.parse.parse_qs(raw_query)
        views: dict[str, Callable[[], object]] = {
            "/healthz": lambda: {"ok": True},
            "/v1/events": lambda: ingest.events(offset=_int_arg(query, "offset"), limit=_limit_arg(query)),
            "/v1/summary": lambda: ingest.summary(Filters.from_query(query), View.from_query(query)),
            "/v1/stats": ingest.stats,
            "/v1/_arrivals": ingest.arrivals,
            "/v1/_faults": lambda: [asdict(f) for f in ingest.faults],
        }
        if (view := views.get(path)) is None:
            return self._send(404, {"error": "not found"})
        try:
            return self._send(200, view())
        except ValueError as exc:  # a bad query parameter
            return self._send(400, {"error": str(exc)})

    def do_POST(self) -> None:
        if not self.server.begin_answer(self.connection):
            self.close_connection = True  # stopping: answer nothing, so the client retries
            return None
        try:
            self._post()
        finally:
            self.server.end_answer(self.connection)
            if self.server.ingest.stopping:
                self.close_connection = True

    def _post(self) -> None:
        path = self.path.split("?", 1)[0]
        if (refusal := self._refusal(path, changes=True)) is not None:
            self._read_body()  # read before answering: unread input would reset the connection
            return self._send(*refusal)
        if path == INGEST_PATH:
            reception = self.server.ingest.reception
            arrival = reception.begin_arrival()  # before the body: that is when it arrived
            reply = reception.answer(arrival, self.headers, self._read_body())
            if reply.status is None:
                self.close_connection = True
                return None
            return self._send(reply.status, reply.payload, reply.headers)
        body = self._read_body()
        if isinstance(body, _Refused):
            return self._send(body.status, {"error": body.message})
        try:
            if path == "/v1/_faults":
                faults = [Fault.from_dict(f) for f in json.loads(body or b"[]")]
                self.server.ingest.script(faults)
                return self._send(200, {"scripted": len(faults)})
        except (ValueError, TypeError) as exc:
            return self._send(400, {"error": f"expected a JSON list of faults: {exc}"})
        if path == "/v1/_reset":
            self.server.ingest.reset()
            return self._send(200, {"reset": True})
        return self._send(404, {"error": "not found"})

    def _refusal(self, path: str, *, changes: bool) -> tuple[int, dict[str, str], dict[str, str]] | None:
        """Why this request may not be answered (status, body, headers), or None: see ``access``."""
        access, headers = self.server.access, self.headers
        if problem := access.host_problem(headers.get("Host")):
            return 421, {"error": problem}, {}
        origin, fetch_site = headers.get("Origin"), headers.get("Sec-Fetch-Site")
        if changes and (problem := access.origin_problem(origin, headers.get("Host"), fetch_site)):
            return 403, {"error": problem}, {}
        if path in _GUARDED and (problem := access.key_problem(headers.get("Authorization"))):
            return 401, {"error": problem}, {"WWW-Authenticate": "Bearer"}
        if path in _TEST_ENDPOINTS and changes and not json_content_type(headers.get("Content-Type")):
            # text/plain, forms and no body at all are what any page may send to any site.
            return 415, {"error": "expected Content-Type: application/json"}, {}
        return None

    def _read_body(self) -> bytes | _Refused:
        """Read the whole request body, or say why it cannot be used."""
        # Always read it all before answering: closing with unread input resets the TCP
        # connection, and the client would see a reset instead of our status.
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():  # also refuses chunked bodies, which http.server cannot read
            self.close_connection = True  # unknown framing: the stream cannot be reused
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                discard_chunked(self.rfile, MAX_BODY_BYTES)
            return _Refused(400, "a Content-Length header is required")
        if (remaining := int(length)) <= MAX_BODY_BYTES:
            return self.rfile.read(remaining)
        while remaining > 0 and (chunk := self.rfile.read(min(remaining, 1 << 20))):
            remaining -= len(chunk)
        return _Refused(413, f"body is over {MAX_BODY_BYTES} bytes")

    def _send_page(self, page: bytes, policy: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", policy)
        self.end_headers()
        self.wfile.write(page)

    def _send(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        """Send a JSON response with an exact Content-Length."""
        data = b"" if status in (204, 304) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):  # these two must not announce a body
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")  # never read as a script or page
        self.end_headers()
        self.wfile.write(data)


@functools.cache
def _dashboard() -> tuple[bytes, str]:
    """The dashboard, a static page that draws GET /v1/summary and /v1/stats, and its CSP."""
    page = importlib.resources.files("beacon_otel.devingest").joinpath("dashboard.html").read_bytes()
    return page, content_security_policy(page)


def content_security_policy(page: bytes) -> str:
    """The page may run its own inline script and style, named by hash, and read this server only.

    It draws values from requests the app served; they are only ever set as text, and should
    one ever reach the page as markup, no script or style of theirs would run.
    """

    def hashes(tag: bytes) -> str:
        blocks = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page, re.DOTALL)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in blocks)

    return (
        f"default-src 'none'; script-src {hashes(b'script')}; style-src {hashes(b'style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _int_arg(query: dict[str, list[str]], name: str) -> int:
    value = (query.get(name) or ["0"])[0]
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def _limit_arg(query: dict[str, list[str]]) -> int | None:
    return _int_arg(query, "limit") if "limit" in query else None
