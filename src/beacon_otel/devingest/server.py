"""DevIngest: the dev ingest's lifecycle, stored events and the state tests inspect.

It owns the SQLite store of accepted events, the counters, rejections, arrivals and fault
script; the HTTP server in httpd.py calls into it for every request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from beacon_otel.devingest.faults import Fault
from beacon_otel.devingest.httpd import INGEST_PATH, _Server
from beacon_otel.devingest.store import EventStore, KeyReused
from beacon_otel.devingest.summary import COLUMNS, Filters, summarise
from beacon_otel.devingest.table import format_rejection
from beacon_otel.devingest.validation import _Refused, parse_batch, parse_idempotency_key

# The package's name, as before the split into modules: one logger for the dev ingest.
_logger = logging.getLogger("beacon_otel.devingest")

_COUNTERS = (
    "batches_accepted",
    "batches_rejected",
    "events_accepted",
    "faults_served",
    "batches_repeated",
    "events_repeated",
)


@dataclass(frozen=True)
class Reply:
    """The answer to one ingest POST: a status and JSON body, or ``status=None`` to hang up."""

    status: int | None
    payload: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


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
        self._store: EventStore | None = None
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
        store = EventStore(self.db_path)
        try:
            server = _Server((self.host, self.port), self)
        except BaseException:
            store.close()
            raise
        self._store, self._server, self.port = store, server, server.server_address[1]
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
            self._require_store().close()
            self._store = None

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

    def events(self, *, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The stored events, oldest first, as the client sent them.

        Args:
            offset: skip the first ``offset`` stored events (``beacon-otel tail`` asks for
                what is new since its last poll).
            limit: only the newest ``limit`` events.
        """
        with self._lock:
            return self._require_store().events(offset=offset, limit=limit)

    def stats(self) -> dict[str, Any]:
        """Counters, stored event count, pending faults and every rejection with its problems."""
        with self._lock:
            return {
                **self._counters,
                "events_stored": self._require_store().count(),
                "faults_pending": len(self._faults),
                "rejections": json.loads(json.dumps(self._rejections)),  # a deep copy
            }

    def summary(self, filters: Filters | None = None) -> dict[str, Any]:
        """Per route figures, status mix, latest errors, validation fields and charts' data."""
        with self._lock:
            rows = self._require_store().rows(COLUMNS)
        return summarise(rows, filters or Filters())

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least n events are stored and return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (count := self._require_store().count()) < n:
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
            self._require_store().clear()
            self._counters = dict.fromkeys(_COUNTERS, 0)
            self._rejections.clear()
            self._arrivals.clear()
            self._faults.clear()
            self._changed.notify_all()

    # -- for the HTTP layer ---------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True from the moment stop() begins: no new answer should start."""
        return self._stopping.is_set()

    def begin_arrival(self) -> dict[str, Any]:
        """Record an ingest POST as it arrives (before its body is read); give it to answer()."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            arrival: dict[str, Any] = {"seq": len(self._arrivals), "monotonic": now, "wall": wall}
            arrival |= {"outcome": "pending", "status": None, "events": 0, "finished": None}
            self._arrivals.append(arrival)
            return arrival

    def answer(self, arrival: dict[str, Any], headers: Any, body: bytes | _Refused) -> Reply:
        """Answer one ingest POST: the next scripted fault if any, else validate and store."""
        if (fault := self._next_fault()) is not None:
            self._emit(f"injected fault: {fault}")
            self._stopping.wait(fault.hang)  # stop() cuts a hang short
            if fault.drop:
                self._finish_arrival(arrival, "dropped", None)
                return Reply(None)
            if fault.status is not None:
                self._finish_arrival(arrival, "fault", fault.status)
                return Reply(fault.status, {"error": "injected fault"}, fault.headers)
        reply = self.handle_batch(headers, body)
        outcome = "accepted" if reply.status == 202 else "rejected"
        self._finish_arrival(arrival, outcome, reply.status, reply.payload.get("accepted", 0))
        return reply

    def handle_batch(self, headers: Any, body: bytes | _Refused) -> Reply:
        """Validate one ingest request and store its events once per Idempotency-Key."""
        try:
            events = parse_batch(headers, body, self.ingest_key)
            key = parse_idempotency_key(headers)
            with self._changed:
                try:
                    stored = self._require_store().store_batch(events, key, _now_iso())
                except KeyReused as exc:
                    raise _Refused(422, str(exc)) from None
                self._counters["batches_repeated" if stored.repeat else "batches_accepted"] += 1
                self._counters["events_repeated" if stored.repeat else "events_accepted"] += stored.events
                self._changed.notify_all()
        except _Refused as exc:
            answer = {"error": exc.message, **({"problems": exc.problems} if exc.problems else {})}
            rejection = {"status": exc.status, **answer, "at": _now_iso()}
            with self._lock:
                self._counters["batches_rejected"] += 1
                self._rejections.append(rejection)
            self._emit(format_rejection(rejection))
            return Reply(exc.status, answer, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})
        # A repeat gets the first answer again: the client must forget the batch either way.
        what = "repeated batch, not stored again:" if stored.repeat else "accepted"
        self._emit(f"{what} {stored.events} events")
        return Reply(202, {"accepted": stored.events})

    # -- internals ---------------------------------------------------------------------------

    def _require_store(self) -> EventStore:
        if self._store is None:
            raise RuntimeError("DevIngest is not running: call start() first")
        return self._store

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            self._counters["faults_served"] += 1
            return self._faults.pop(0)

    def _finish_arrival(
        self, arrival: dict[str, Any], outcome: str, status: int | None, events: int = 0
    ) -> None:
        with self._lock:
            arrival.update(outcome=outcome, status=status, events=events, finished=time.monotonic())

    def _emit(self, line: str) -> None:
        try:
            if self._log is not None:
                self._log(line)
        except Exception:  # a failing printer must not cost the client its response
            _logger.exception("DevIngest log callback failed")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
