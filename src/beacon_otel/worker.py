"""Events become batches: a bounded buffer drained by one background thread."""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from beacon_otel.event import RequestEvent
from beacon_otel.transport import Outcome, Verdict, backoff_delay

logger = logging.getLogger("beacon_otel")

MAX_ATTEMPTS = 6
"""Attempts per batch before it is given up (about a minute of backoff in all)."""


class Transport(Protocol):
    """Anything that can take an encoded batch: the HTTP transport or the dry-run sink."""

    def send(self, body: bytes) -> Outcome: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class DeliveryError(Exception):
    """A batch could not be delivered; given to ``on_error``."""

    def __init__(self, reason: str, events: int, outcome: Outcome | None = None) -> None:
        status = f" (HTTP {outcome.status})" if outcome and outcome.status else ""
        detail = f": {outcome.detail}" if outcome and outcome.detail else ""
        super().__init__(f"{events} Beacon events {_REASON_TEXT.get(reason, reason)}{status}{detail}")
        self.reason = reason
        self.events = events
        self.status = outcome.status if outcome else None


class DeliveryStats:
    """Counters of what happened to events, readable at any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queued = 0
        self.sent = 0
        self.retried = 0
        self.dropped: collections.Counter[str] = collections.Counter()

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` events lost for ``reason``."""
        with self._lock:
            self.dropped[reason] += count

    def add(self, name: str, count: int = 1) -> None:
        """Increase a plain counter."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def queued_one(self, evicted_oldest: bool) -> None:
        """Count an accepted event, and the oldest one it pushed out of a full buffer."""
        with self._lock:
            self.queued += 1
            if evicted_oldest:
                self.dropped["buffer_full"] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy: ``queued``, ``sent``, ``retried``, ``dropped`` (by reason)."""
        with self._lock:
            return {
                "queued": self.queued,
                "sent": self.sent,
                "retried": self.retried,
                "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()),
            }


class _Batch:
    __slots__ = ("attempts", "events")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.attempts = 0


class DeliveryWorker:
    """Buffers events and delivers them in batches on one daemon thread; at most one request in flight."""

    def __init__(
        self,
        transport: Transport,
        *,
        batch_size: int,
        flush_interval: float,
        max_buffer_size: int,
        shutdown_timeout: float,
        stats: DeliveryStats,
        report: Callable[[DeliveryError], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_buffer = max_buffer_size
        self._shutdown_timeout = shutdown_timeout
        self._stats = stats
        self._report = report
        self._clock = clock
        self._stopped = False
        self._reset_state()
        weak_self = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: (method := weak_self()) and method())
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._buffer: collections.deque[RequestEvent] = collections.deque()
        self._pending: collections.deque[_Batch] = collections.deque()
        self._retry_at = 0.0
        self._flush_requests = 0
        self._busy = False
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None

    # -- request path --------------------------------------------------------------------

    def submit(self, event: RequestEvent) -> bool:
        """Queue one event without blocking; returns False if it was refused (and counted)."""
        if self._pid != os.getpid():
            # uWSGI and friends fork from C without running at-fork hooks.
            self._after_fork_in_child()
        with self._lock:
            if self._stopped:
                self._stats.drop("after_shutdown")
                return False
            evicted = len(self._buffer) >= self._max_buffer
            if evicted:
                self._buffer.popleft()  # the oldest goes first: recent traffic matters most
            self._buffer.append(event)
            self._stats.queued_one(evicted)
            if self._thread is None:
                self._start_thread()
            elif len(self._buffer) == self._batch_size:
                self._wake.notify()
        return True

    def buffered(self) -> int:
        """Events waiting in memory, in the buffer or in batches awaiting a retry."""
        with self._lock:
            return len(self._buffer) + sum(len(batch.events) for batch in self._pending)

    # -- control ---------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Deliver everything buffered now; True if done within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        with self._lock:
            if self._thread is None and not self._buffer and not self._pending:
                return True
            if self._thread is None:
                self._start_thread()
            self._flush_requests += 1
            self._wake.notify()
            try:
                while self._buffer or self._pending or self._busy:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return False
                    self._idle.wait(remaining)
                return True
            finally:
                self._flush_requests -= 1

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` seconds, then stop; what is left is counted as dropped."""
        timeout = self._shutdown_timeout if timeout is None else timeout
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping = True
            self._deadline = self._clock() + timeout
            if self._thread is None and (self._buffer or self._pending):
                self._start_thread()
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            # Bounded even when a request hangs: the thread is a daemon and is left behind.
            thread.join(timeout)
        with self._lock:
            left = len(self._buffer) + sum(len(batch.events) for batch in self._pending)
            self._buffer.clear()
            self._pending.clear()
        if left:
            self._stats.drop("shutdown", left)
            self._report(DeliveryError("shutdown", left))
        self._transport.close()

    # -- background thread -----------------------------------------------------------------

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name="beacon-otel-delivery", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        next_flush = self._clock() + self._interval
        while True:
            with self._lock:
                while not self._should_work(next_flush):
                    self._wake.wait(self._seconds_until(next_flush))
                stopping = self._stopping
                # Partial batches wait for the interval, a flush or shutdown: fewer, fuller requests.
                drain_all = stopping or self._flush_requests > 0 or self._clock() >= next_flush
            self._deliver_due(stopping, drain_all)
            now = self._clock()
            if now >= next_flush:
                next_flush = now + self._interval
            if stopping:
                return

    def _should_work(self, next_flush: float) -> bool:
        if self._stopping:
            return True
        now = self._clock()
        if self._pending or self._retry_at > now:
            return now >= self._retry_at
        return (
            len(self._buffer) >= self._batch_size
            or (self._flush_requests > 0 and bool(self._buffer))
            or (now >= next_flush and bool(self._buffer))
        )

    def _seconds_until(self, next_flush: float) -> float:
        now = self._clock()
        wake_at = max(self._retry_at, now) if self._pending else next_flush
        return max(0.001, wake_at - now)

    def _deliver_due(self, stopping: bool, drain_all: bool) -> None:
        """Send batches until none is due or the ingest asks us to wait."""
        while True:
            with self._lock:
                now = self._clock()
                if now < self._retry_at:
                    break  # honour the backoff or Retry-After, at shutdown too
                if stopping and self._deadline is not None and now >= self._deadline:
                    break
                if not self._pending:
                    if not self._buffer or (len(self._buffer) < self._batch_size and not drain_all):
                        break
                    count = min(self._batch_size, len(self._buffer))
                    events = [self._buffer.popleft() for _ in range(count)]
                    self._pending.append(_Batch([event.as_dict() for event in events]))
                batch = self._pending[0]
                self._busy = True
            try:
                verdict = self._attempt(batch, stopping)
            finally:
                with self._lock:
                    self._busy = False
                    self._idle.notify_all()
            if stopping and verdict is Verdict.RETRY:
                break  # the ingest is down: do not spend the shutdown deadline on it
        with self._lock:
            self._idle.notify_all()

    def _attempt(self, batch: _Batch, stopping: bool) -> Verdict:
        body = json.dumps({"events": batch.events}, ensure_ascii=False, separators=(",", ":"))
        outcome = self._safe_send(body.encode("utf-8"))
        batch.attempts += 1
        verdict = outcome.verdict
        if verdict is Verdict.ACCEPTED:
            self._forget(batch)
            self._stats.add("sent", len(batch.events))
            self._retry_at = 0.0
        elif verdict is Verdict.SPLIT and len(batch.events) > 1:
            half = len(batch.events) // 2
            with self._lock:
                self._pending.popleft()
                self._pending.extendleft([_Batch(batch.events[half:]), _Batch(batch.events[:half])])
        elif verdict is Verdict.RETRY and batch.attempts < MAX_ATTEMPTS and not stopping:
            self._stats.add("retried", len(batch.events))
            delay = backoff_delay(batch.attempts - 1)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            self._retry_at = self._clock() + delay
            logger.debug("Beacon ingest unavailable (%s); retrying in %.1fs", outcome, delay)
        else:
            self._forget(batch)
            reason = "retries_exhausted" if verdict is Verdict.RETRY else "rejected"
            self._stats.drop(reason, len(batch.events))
            self._report(DeliveryError(reason, len(batch.events), outcome))
        return verdict

    def _forget(self, batch: _Batch) -> None:
        with self._lock:
            if self._pending and self._pending[0] is batch:
                self._pending.popleft()

    def _safe_send(self, body: bytes) -> Outcome:
        try:
            return self._transport.send(body)
        except Exception as exc:  # a transport must not kill the delivery thread
            logger.debug("Beacon transport failed", exc_info=True)
            return Outcome(Verdict.RETRY, detail=f"transport error: {type(exc).__name__}")

    def _after_fork_in_child(self) -> None:
        # Events buffered before the fork belong to the parent, which delivers them;
        # locks, the thread and the HTTP connection pool must not be shared.
        self._reset_state()
        self._transport.reset()


_REASON_TEXT = {
    "rejected": "refused by the ingest",
    "retries_exhausted": "not delivered after retries",
    "shutdown": "not delivered before the shutdown deadline",
}


def _shutdown_at_exit(ref: weakref.ref[DeliveryWorker]) -> None:
    # The provider's own exit handler usually gets here first; shutdown is idempotent.
    worker = ref()
    if worker is not None and worker._pid == os.getpid():
        worker.shutdown()
