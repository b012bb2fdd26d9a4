"""Local dev ingest: a Beacon ingest server that validates as strictly as the contract."""

from __future__ import annotations

import contextlib
import gzip
import hmac
import io
import json
import logging
import re
import socket
import socketserver
import sqlite3
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "DevIngest",
    "Fault",
    "IngestTimeout",
    "format_rejection",
    "format_summary",
    "validate_event",
]

_logger = logging.getLogger(__name__)

INGEST_PATH = "/v1/ingest"
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_PROBLEMS = 100  # enough to diagnose a bad batch without echoing a 10 MiB one back
_INT64_MAX = 2**63 - 1  # SQLite's INTEGER; a larger duration is no longer a duration
_EVENT_KEYS = ("ts", "method", "route", "path", "status", "duration_ms", "consumer", "error")
# Extended ISO 8601 with an explicit offset; fromisoformat alone also takes naive and basic forms.
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,9}))?)?(?:Z|[+-]\d{2}:\d{2})")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NUL_RE = re.compile(r"\x00")
_COUNTERS = ("batches_accepted", "batches_rejected", "events_accepted", "faults_served")
_SELECT_EVENTS = f"SELECT {', '.join(_EVENT_KEYS)}, validation_errors FROM events ORDER BY id"
_SELECT_SUMMARY = "SELECT method, route, status, duration_ms, consumer, error FROM events"
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(_EVENT_KEYS)}, validation_errors, batch_id, received_at)"
    f" VALUES ({', '.join('?' * (len(_EVENT_KEYS) + 3))})"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT NOT NULL, received_at TEXT NOT NULL,
    ts TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL,
    status INTEGER NOT NULL, duration_ms INTEGER NOT NULL, consumer TEXT, error TEXT,
    validation_errors TEXT
)"""

Problem = dict[str, Any]


class _Refused(Exception):
    """A request the ingest refuses as a whole, with its HTTP status."""

    def __init__(self, status: int, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []


def _text_problem(value: object, max_len: int, *, min_len: int = 0, line: bool = False) -> str | None:
    """Return why `value` is not an acceptable contract string, or None."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not min_len <= len(value) <= max_len:
        return f"length {len(value)} is outside {min_len}..{max_len}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # the JSON decoder turns a "\ud800" escape into a lone surrogate
        return "contains a lone surrogate (not valid UTF-8)"
    # Clients strip control characters from request-line fields (method, route, path);
    # free text may keep newlines and tabs, but a NUL is always a client bug.
    if (_CONTROL_RE if line else _NUL_RE).search(value):
        return "contains a control character" if line else "contains a NUL character"
    return None


def _nullable_text_problem(value: object, max_len: int) -> str | None:
    """Return why `value` is neither null nor an acceptable string, or None."""
    return None if value is None else _text_problem(value, max_len)


def _ts_problem(value: object) -> str | None:
    """Return why `value` is not an ISO 8601 time with an explicit offset, or None."""
    if problem := _text_problem(value, 64, min_len=1):
        return problem
    if not (match := _TS_RE.fullmatch(str(value))):
        return "expected ISO 8601 with an explicit offset, e.g. 2026-06-03T12:00:00.000+00:00"
    # Normalise so every Python version parses the same set (3.10 lacks "Z", 7+ digits).
    text = match.group(0).replace("Z", "+00:00")
    if fraction := match.group(1):
        text = text.replace("." + fraction, "." + fraction[:6].ljust(6, "0"))
    try:
        return None if datetime.fromisoformat(text).tzinfo else "naive time (no offset)"
    except ValueError as exc:
        return f"not a valid date/time: {exc}"


def _method_problem(value: object) -> str | None:
    """Return why `value` is not an upper-case ASCII HTTP method, or None."""
    if problem := _text_problem(value, 16, min_len=1, line=True):
        return problem
    if not str(value).isascii() or " " in str(value):
        return "must be ASCII without spaces"
    return None if value == str(value).upper() else "must be upper case"


def _path_problem(value: object, max_len: int, *, query: bool) -> str | None:
    """Return why `value` is not an acceptable route (query=True) or path, or None."""
    if problem := _text_problem(value, max_len, min_len=1, line=True):
        return problem
    if not str(value).startswith("/"):
        return "must start with '/'"
    return None if query or "?" not in str(value) else "must not contain a query string"


def _int_problem(value: object, low: int, high: int) -> str | None:
    """Return why `value` is not a JSON integer in low..high, or None."""
    if type(value) is not int:  # bool is an int subclass, and 1.0 is not an integer here
        return f"expected an integer, got {type(value).__name__}"
    return None if low <= value <= high else f"{value} is outside {low}..{high}"


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "ts": _ts_problem,
    "method": _method_problem,
    "route": lambda v: _path_problem(v, 2048, query=True),
    "path": lambda v: _path_problem(v, 4096, query=False),
    "status": lambda v: _int_problem(v, 100, 599),
    "duration_ms": lambda v: _int_problem(v, 0, _INT64_MAX),
    "consumer": lambda v: _nullable_text_problem(v, 256),
    "error": lambda v: _nullable_text_problem(v, 8192),
}
_VALIDATION_ERROR_LIMITS = {"field": 512, "message": 1024, "type": 256}


def _validation_errors_problems(value: object) -> list[tuple[str, str | None]]:
    """Return (field, problem) pairs for the optional validation_errors array."""
    if not isinstance(value, list) or not 1 <= len(value) <= 50:
        return [("validation_errors", "expected an array of 1..50 items (omit it when empty)")]
    found: list[tuple[str, str | None]] = []
    for i, item in enumerate(value):
        name = f"validation_errors[{i}]"
        if not isinstance(item, dict):
            found.append((name, "expected an object"))
            continue
        found += [(f"{name}.{k}", "unknown key") for k in item if k not in _VALIDATION_ERROR_LIMITS]
        found += [(f"{name}.{k}", "missing") for k in ("field", "message") if k not in item]
        found += [
            (f"{name}.{k}", _text_problem(item[k], limit))
            for k, limit in _VALIDATION_ERROR_LIMITS.items()
            if k in item
        ]
    return found


def validate_event(event: object, index: int = 0) -> list[Problem]:
    """Return every contract violation in one event (empty when the event is valid)."""
    if not isinstance(event, dict):
        return [{"index": index, "field": None, "problem": "expected an object"}]
    found = [(k, "unknown key") for k in event if k not in _CHECKS and k != "validation_errors"]
    found += [(k, "missing") for k in _CHECKS if k not in event]
    found += [(k, check(event[k])) for k, check in _CHECKS.items() if k in event]
    if "validation_errors" in event:
        found += _validation_errors_problems(event["validation_errors"])
    return [{"index": index, "field": f, "problem": p} for f, p in found if p]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing duplicate keys (servers disagree on which one wins)."""
    if len(obj := dict(pairs)) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return obj


def _not_json(name: str) -> None:
    """Refuse NaN and Infinity, which Python accepts but JSON does not."""
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class Fault:
    """One scripted answer to an ingest POST: hang, then drop the connection or send a status."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    drop: bool = False

    def __post_init__(self) -> None:
        if self.status is not None and _int_problem(self.status, 200, 599):
            raise ValueError(f"Expected status to be an integer in 200..599, got {self.status!r}")
        if self.drop and (self.status is not None or self.headers):
            raise ValueError("A dropped connection sends no status or headers")
        if not isinstance(self.hang, (int, float)) or self.hang < 0:
            raise ValueError(f"Expected hang to be seconds >= 0, got {self.hang!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. {"status": 429, "headers": {...}}."""
        if unknown := set(data) - {"status", "headers", "hang", "drop"}:
            raise ValueError(f"Unknown fault keys: {sorted(unknown)}")
        return cls(**data)


class IngestTimeout(AssertionError, TimeoutError):
    """The events a test waited for did not arrive in time."""


def _percentile(sorted_values: list[int], pct: int) -> int | None:
    """Nearest-rank percentile: the smallest value with at least pct% of values at or below."""
    if not sorted_values:
        return None
    rank = -(-pct * len(sorted_values) // 100)  # ceil in integers: no float rounding surprises
    return sorted_values[max(rank, 1) - 1]


def _aggregate(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Request, error and latency figures for (status, duration_ms, consumer, error) rows."""
    errors = sum(1 for status, _, _, error in rows if error is not None or status >= 500)
    durations = sorted(row[1] for row in rows)
    return {
        "requests": len(rows),
        "errors": errors,
        "error_rate": round(errors / len(rows), 4) if rows else 0.0,
        "p50_ms": _percentile(durations, 50),
        "p95_ms": _percentile(durations, 95),
    }


def _summarise(rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """Group (method, route, status, duration_ms, consumer, error) rows into the summary."""
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for method, route, *rest in rows:
        groups.setdefault((method, route), []).append(tuple(rest))
    routes = []
    for (method, route), group in groups.items():
        consumers = Counter("-" if row[2] is None else row[2] for row in group)
        top = sorted(consumers.items(), key=lambda item: (-item[1], item[0]))[:3]
        top_consumers = [{"consumer": name, "count": n} for name, n in top]
        routes.append({"method": method, "route": route, **_aggregate(group), "top_consumers": top_consumers})
    routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
    every = [row for group in groups.values() for row in group]
    return {"routes": routes, "totals": {**_aggregate(every), "routes": len(routes)}}


def _cell(text: str, width: int = 60) -> str:
    """Fit free text into a table cell: control characters shown as '?', long text clipped."""
    text = _CONTROL_RE.sub("?", text)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary (from DevIngest.summary() or GET /v1/summary) as a text table."""
    if not summary["routes"]:
        return "No events received yet."
    head = ["METHOD", "ROUTE", "REQUESTS", "ERRORS", "ERR%", "P50ms", "P95ms", "TOP CONSUMERS"]
    table = [head]
    totals = {**summary["totals"], "method": "TOTAL", "route": f"{len(summary['routes'])} routes"}
    for r in [*summary["routes"], totals]:
        top = (f"{_cell(c['consumer'], 24)} ({c['count']})" for c in r.get("top_consumers", []))
        figures = [r["requests"], r["errors"], f"{r['error_rate']:.1%}", r["p50_ms"], r["p95_ms"]]
        table.append([_cell(r["method"]), _cell(r["route"]), *map(str, figures), ", ".join(top)])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    # Text columns (method, route, consumers) align left, figures right.
    align = [str.ljust, str.ljust, *[str.rjust] * 5, str.ljust]
    lines = ["  ".join(a(c, w) for a, c, w in zip(align, row, widths, strict=True)).rstrip() for row in table]
    rule = "-" * max(map(len, lines))
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def format_rejection(rejection: dict[str, Any]) -> str:
    """One line for a rejected batch: its status, error and first three problems."""
    problems = rejection.get("problems", [])[:3]
    shown = "; ".join(f"[{p['index']}] {p['field']}: {p['problem']}" for p in problems)
    return f"rejected batch ({rejection['status']}): {rejection['error']}" + (shown and f": {shown}")


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
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup, which can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def begin_answer(self, sock: socket.socket) -> bool:
        """Claim ``sock`` until its response is sent; False once stopping has begun."""
        with self.connections_lock:
            if self.ingest._stopping.is_set():
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
        views: dict[str, Callable[[], object]] = {
            "/healthz": lambda: {"ok": True},
            "/v1/events": ingest.events,
            "/v1/summary": ingest.summary,
            "/v1/stats": ingest.stats,
            "/v1/_arrivals": ingest.arrivals,
            "/v1/_faults": lambda: [asdict(f) for f in ingest.faults],
        }
        view = views.get(self.path.split("?", 1)[0])
        self._send(200, view()) if view else self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not self.server.begin_answer(self.connection):
            self.close_connection = True  # stopping: answer nothing, so the client retries
            return None
        try:
            self._post()
        finally:
            self.server.end_answer(self.connection)
            if self.server.ingest._stopping.is_set():
                self.close_connection = True

    def _post(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == INGEST_PATH:
            arrival = self.server.ingest._record_arrival()  # before the body: that is when it arrived
            return self._ingest(arrival, self._read_body())
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

    def _ingest(self, arrival: dict[str, Any], body: bytes | _Refused) -> None:
        """Answer one ingest POST: the next scripted fault if any, else validate and store."""
        ingest = self.server.ingest
        if (fault := ingest._next_fault()) is not None:
            ingest._emit(f"injected fault: {fault}")
            ingest._stopping.wait(fault.hang)  # stop() cuts a hang short
            if fault.drop:
                ingest._finish_arrival(arrival, "dropped", None)
                self.close_connection = True
                return None
            if fault.status is not None:
                ingest._finish_arrival(arrival, "fault", fault.status)
                return self._send(fault.status, {"error": "injected fault"}, fault.headers)
        status, answer = ingest._handle_batch(self.headers, body)
        outcome = "accepted" if status == 202 else "rejected"
        ingest._finish_arrival(arrival, outcome, status, answer.get("accepted", 0))
        return self._send(status, answer, {"WWW-Authenticate": "Bearer"} if status == 401 else {})

    def _read_body(self) -> bytes | _Refused:
        """Read the whole request body, or say why it cannot be used."""
        # Always read it all before answering: closing with unread input resets the TCP
        # connection, and the client would see a reset instead of our status.
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():  # also refuses chunked bodies, which http.server cannot read
            self.close_connection = True  # unknown framing: the stream cannot be reused
            return _Refused(400, "a Content-Length header is required")
        if (remaining := int(length)) <= MAX_BODY_BYTES:
            return self.rfile.read(remaining)
        while remaining > 0 and (chunk := self.rfile.read(min(remaining, 1 << 20))):
            remaining -= len(chunk)
        return _Refused(413, f"body is over {MAX_BODY_BYTES} bytes")

    def _send(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        """Send a JSON response with an exact Content-Length."""
        data = b"" if status in (204, 304) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):  # these two must not announce a body
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class DevIngest:
    """A strict Beacon ingest on a local socket that stores accepted events in SQLite."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str = ":memory:",
        ingest_key: str | None = None,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.host, self.port, self.db_path, self.ingest_key = host, port, db_path, ingest_key
        self._log = log
        # One lock guards the database, counters, faults and arrivals; the condition
        # wakes wait_for_events() whenever events are stored.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._db: sqlite3.Connection | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faults: list[Fault] = []
        self._arrivals: list[dict[str, Any]] = []
        self._rejections: list[dict[str, Any]] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. http://127.0.0.1:8390."""
        if self.port == 0:
            raise RuntimeError("DevIngest has no port yet: call start() first")
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The full ingest endpoint, e.g. http://127.0.0.1:8390/v1/ingest."""
        return self.base_url + INGEST_PATH

    def start(self) -> DevIngest:
        """Bind, then serve on a daemon thread; a restart after stop() reuses the port."""
        if self._server is not None:
            raise RuntimeError("DevIngest is already running")
        db = sqlite3.connect(self.db_path, check_same_thread=False)
        try:
            db.execute(_SCHEMA)
            server = _Server((self.host, self.port), self)
        except BaseException:
            db.close()
            raise
        self._db, self._server, self.port = db, server, server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every connection and handler thread, and close the database."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the handler threads, so none touches the closed db
        thread.join()
        with self._lock:
            self._require_db().close()
            self._db = None

    def __enter__(self) -> DevIngest:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, faults: Iterable[Fault]) -> None:
        """Replace the fault script: each ingest POST consumes the next fault, then normal."""
        with self._lock:
            self._faults = list(faults)

    @property
    def faults(self) -> list[Fault]:
        """The scripted faults not consumed yet."""
        with self._lock:
            return list(self._faults)

    def arrivals(self) -> list[dict[str, Any]]:
        """Every ingest POST so far: arrival times (monotonic and wall clock) and outcome."""
        with self._lock:
            return [dict(a) for a in self._arrivals]

    def events(self) -> list[dict[str, Any]]:
        """The stored events, oldest first, as the client sent them."""
        events = []
        for *values, validation_errors in self._query(_SELECT_EVENTS):
            event = dict(zip(_EVENT_KEYS, values, strict=True))
            if validation_errors is not None:
                event["validation_errors"] = json.loads(validation_errors)
            events.append(event)
        return events

    def stats(self) -> dict[str, Any]:
        """Counters, stored event count, pending faults and every rejection with its problems."""
        with self._lock:
            return {
                **self._counters,
                "events_stored": self._query("SELECT COUNT(*) FROM events")[0][0],
                "faults_pending": len(self._faults),
                "rejections": json.loads(json.dumps(self._rejections)),  # a deep copy
            }

    def summary(self) -> dict[str, Any]:
        """Per (method, route): requests, errors, error rate, p50/p95 and top consumers."""
        return _summarise(self._query(_SELECT_SUMMARY))

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least n events are stored and return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (count := self._query("SELECT COUNT(*) FROM events")[0][0]) < n:
                if (remaining := deadline - time.monotonic()) <= 0:
                    raise IngestTimeout(
                        f"expected at least {n} events within {timeout}s, got {count}; "
                        f"counters: {self._counters}; rejections: {self._rejections[-3:]}"
                    )
                self._changed.wait(remaining)
        return self.events()

    def reset(self) -> None:
        """Forget stored events, counters, rejections, arrivals and scripted faults."""
        with self._changed:
            with self._require_db() as db:
                db.execute("DELETE FROM events")
            self._counters = dict.fromkeys(_COUNTERS, 0)
            self._rejections.clear()
            self._arrivals.clear()
            self._faults.clear()
            self._changed.notify_all()

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("DevIngest is not running: call start() first")
        return self._db

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._require_db().execute(sql).fetchall()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            self._counters["faults_served"] += 1
            return self._faults.pop(0)

    def _record_arrival(self) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            arrival = {"seq": len(self._arrivals), "monotonic": now, "wall": wall}
            arrival |= {"outcome": "pending", "status": None, "events": 0, "finished": None}
            self._arrivals.append(arrival)
            return arrival

    def _finish_arrival(
        self, arrival: dict[str, Any], outcome: str, status: int | None, events: int = 0
    ) -> None:
        with self._lock:
            arrival.update(outcome=outcome, status=status, events=events, finished=time.monotonic())

    def _handle_batch(self, headers: Any, body: bytes | _Refused) -> tuple[int, dict[str, Any]]:
        """Validate one ingest request and store its events: (status, JSON answer)."""
        try:
            events = self._parse(headers, body)
        except _Refused as exc:
            answer = {"error": exc.message, **({"problems": exc.problems} if exc.problems else {})}
            rejection = {"status": exc.status, **answer, "at": _now_iso()}
            with self._lock:
                self._counters["batches_rejected"] += 1
                self._rejections.append(rejection)
            self._emit(format_rejection(rejection))
            return exc.status, answer
        batch, received_at = uuid.uuid4().hex, _now_iso()
        rows = [
            (*(e[k] for k in _EVENT_KEYS), _json_or_none(e.get("validation_errors")), batch, received_at)
            for e in events
        ]
        with self._changed:
            with self._require_db() as db:  # one transaction: a batch is stored whole or not at all
                db.executemany(_INSERT_EVENT, rows)
            self._counters["batches_accepted"] += 1
            self._counters["events_accepted"] += len(rows)
            self._changed.notify_all()
        self._emit(f"accepted {len(rows)} events")
        return 202, {"accepted": len(rows)}

    def _parse(self, headers: Any, body: bytes | _Refused) -> list[dict[str, Any]]:
        """Check auth, headers and body exactly as the contract says; return the events."""
        auth = headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if not key or key != key.strip():
            raise _Refused(401, "expected 'Authorization: Bearer <ingest key>'")
        if self.ingest_key is not None and not hmac.compare_digest(key.encode(), self.ingest_key.encode()):
            raise _Refused(401, "unknown ingest key")
        content_type = headers.get("Content-Type", "")
        media_type, _, params = content_type.replace(" ", "").lower().partition(";")
        # The only parameter JSON can carry is charset, and JSON is UTF-8 (RFC 8259).
        if media_type != "application/json" or params not in ("", "charset=utf-8"):
            raise _Refused(400, f"Content-Type must be application/json, got {content_type!r}")
        encoding = headers.get("Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "gzip":
            raise _Refused(400, f"unsupported Content-Encoding {encoding!r} (only gzip)")
        if isinstance(body, _Refused):
            raise body
        raw = _gunzip(body) if encoding is not None else body
        try:
            doc = json.loads(raw.decode(), object_pairs_hook=_unique_keys, parse_constant=_not_json)
        except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
            raise _Refused(400, f"body is not UTF-8 JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != {"events"}:
            raise _Refused(400, 'expected a JSON object with exactly one key, "events"')
        events = doc["events"]
        if not isinstance(events, list) or not events:
            raise _Refused(400, '"events" must be a non-empty array')
        problems = [p for i, event in enumerate(events) for p in validate_event(event, i)]
        if problems:
            bad = len({p["index"] for p in problems})
            message = f"{bad} invalid event(s): the whole batch is rejected"
            raise _Refused(400, message, problems[:MAX_PROBLEMS])
        return events

    def _emit(self, line: str) -> None:
        try:
            if self._log is not None:
                self._log(line)
        except Exception:  # a failing printer must not cost the client its response
            _logger.exception("DevIngest log callback failed")


def _gunzip(body: bytes) -> bytes:
    """Decompress a gzip body, refusing one that inflates past the size limit."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
            data = f.read(MAX_BODY_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise _Refused(400, f"invalid gzip body: {exc}") from None
    if len(data) > MAX_BODY_BYTES:
        raise _Refused(413, f"decompressed body is over {MAX_BODY_BYTES} bytes")
    return data


def _json_or_none(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
