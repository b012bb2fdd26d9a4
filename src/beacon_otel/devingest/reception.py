"""What the dev ingest answers to each POST, and what it records about them.

Each POST consumes the next scripted fault if there is one, else is checked against the
contract and its events stored once per Idempotency-Key. Every POST is an arrival (times and
outcome); every refusal a rejection with its problems; the counters add them up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from beacon_otel.devingest.access import json_content_type
from beacon_otel.devingest.faults import Fault
from beacon_otel.devingest.store import EventStore, KeyReused
from beacon_otel.devingest.table import format_rejection
from beacon_otel.devingest.terminal import printable
from beacon_otel.devingest.validation import _Refused, parse_batch, parse_idempotency_key

# The package's name, as before the split into modules: one logger for the dev ingest.
_logger = logging.getLogger("beacon_otel.devingest")

# Kept for the dashboard, `summary` and tests; the counters count every one.
KEPT_REJECTIONS = 100
KEPT_ARRIVALS = 10_000
# Batches decoded and checked at once: each may inflate to 10 MiB and its parse to a few times
# that, and under the GIL more at once would not finish sooner.
DECODERS = 2

COUNTERS = (
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


class Reception:
    """Answers ingest POSTs for a DevIngest and keeps its arrivals, rejections, counters and faults."""

    def __init__(
        self,
        changed: threading.Condition,
        store: Callable[[], EventStore],
        ingest_key: str | None,
        *,
        log: Callable[[str], None] | None,
        stopping: threading.Event,
    ) -> None:
        self._lock = self._changed = changed  # the DevIngest's: wait_for_events() waits on it
        self._store = store
        self._ingest_key = ingest_key
        self._log = log
        self._stopping = stopping
        self._faults: list[Fault] = []
        self._arrivals: deque[dict[str, Any]] = deque(maxlen=KEPT_ARRIVALS)
        self._arrived = 0
        self._rejections: deque[dict[str, Any]] = deque(maxlen=KEPT_REJECTIONS)
        self._decoders = threading.BoundedSemaphore(DECODERS)
        self.counters = dict.fromkeys(COUNTERS, 0)
        """Accepted, rejected and repeated batches and events, faults served; read under the lock."""

    def script(self, faults: Iterable[Fault]) -> None:
        """Replace the fault script: each ingest POST consumes the next fault, then normal."""
        with self._lock:
            self._faults = list(faults)

    def faults(self) -> list[Fault]:
        """The scripted faults not consumed yet."""
        with self._lock:
            return list(self._faults)

    def arrivals(self) -> list[dict[str, Any]]:
        """The last 10,000 ingest POSTs: arrival times (monotonic and wall clock) and outcome."""
        with self._lock:
            return [dict(a) for a in self._arrivals]

    def rejections(self) -> list[dict[str, Any]]:
        """The last 100 rejections with their problems, as a deep copy."""
        with self._lock:
            copied: list[dict[str, Any]] = json.loads(json.dumps(list(self._rejections)))
            return copied

    def forget(self) -> None:
        """Forget counters, rejections, arrivals and scripted faults; lock held."""
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._rejections.clear()
        self._arrivals.clear()
        self._arrived = 0
        self._faults.clear()

    def begin_arrival(self) -> dict[str, Any]:
        """Record an ingest POST as it arrives (before its body is read); give it to answer()."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            arrival: dict[str, Any] = {"seq": self._arrived, "monotonic": now, "wall": wall}
            self._arrived += 1
            arrival |= {"outcome": "pending", "status": None, "events": 0, "finished": None}
            self._arrivals.append(arrival)
            return arrival

    def answer(self, arrival: dict[str, Any], headers: Any, body: bytes | _Refused) -> Reply:
        """Answer one ingest POST: the next scripted fault if any, else validate and store."""
        # A body any page may send to any site (text/plain, a form) is only refused: it never
        # consumes a fault scripted for the client under test.
        if json_content_type(headers.get("Content-Type")) and (fault := self._next_fault()) is not None:
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
            with self._decoders:
                events = parse_batch(headers, body, self._ingest_key)
            key = parse_idempotency_key(headers)
            with self._changed:
                try:
                    stored = self._store().store_batch(events, key, _now_iso())
                except KeyReused as exc:
                    raise _Refused(422, str(exc)) from None
                self.counters["batches_repeated" if stored.repeat else "batches_accepted"] += 1
                self.counters["events_repeated" if stored.repeat else "events_accepted"] += stored.events
                self._changed.notify_all()
        except _Refused as exc:
            answer = {"error": exc.message, **({"problems": exc.problems} if exc.problems else {})}
            if headers.get(PROBE_HEADER):
                # `beacon-otel doctor`'s probe: answered as the contract says, but not a batch.
                self._emit(f"probe from beacon-otel doctor answered {exc.status}")
                return Reply(exc.status, answer, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})
            rejection = {"status": exc.status, **answer, "at": _now_iso()}
            with self._lock:
                self.counters["batches_rejected"] += 1
                self._rejections.append(rejection)
            self._emit(format_rejection(rejection))
            return Reply(exc.status, answer, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})
        # A repeat gets the first answer again: the client must forget the batch either way.
        what = "repeated batch, not stored again:" if stored.repeat else "accepted"
        self._emit(f"{what} {stored.events} events")
        return Reply(202, {"accepted": stored.events})

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            self.counters["faults_served"] += 1
            return self._faults.pop(0)

    def _finish_arrival(
        self, arrival: dict[str, Any], outcome: str, status: int | None, events: int = 0
    ) -> None:
        with self._lock:
            arrival.update(outcome=outcome, status=status, events=events, finished=time.monotonic())

    def _emit(self, line: str) -> None:
        try:
            if self._log is not None:
                self._log(printable(line))  # a terminal or a log: nothing the sender wrote drives it
        except Exception:  # a failing printer must not cost the client its response
            _logger.exception("DevIngest log callback failed")


PROBE_HEADER = "Beacon-Probe"
"""Marks `beacon-otel doctor`'s empty batch: refused as any, never counted as a rejected batch."""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
