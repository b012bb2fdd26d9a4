"""DevIngest: the dev ingest's lifecycle, stored events and the state tests inspect.

It owns the SQLite store of accepted events, the counters, rejections, arrivals and fault
script; the HTTP server in httpd.py calls into it for every request.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from beacon_otel.devingest.faults import Fault
from beacon_otel.devingest.httpd import INGEST_PATH, _Server
from beacon_otel.devingest.summary import _summarise, format_rejection
from beacon_otel.devingest.validation import _Refused, parse_batch

# The package's name, as before the split into modules: one logger for the dev ingest.
_logger = logging.getLogger("beacon_otel.devingest")

_EVENT_KEYS = ("ts", "method", "route", "path", "status", "duration_ms", "consumer", "error")
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


class IngestTimeout(AssertionError, TimeoutError):
    """The events a test waited for did not arrive in time."""


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
            events = parse_batch(headers, body, self.ingest_key)
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

    def _emit(self, line: str) -> None:
        try:
            if self._log is not None:
                self._log(line)
        except Exception:  # a failing printer must not cost the client its response
            _logger.exception("DevIngest log callback failed")


def _json_or_none(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
