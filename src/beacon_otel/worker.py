"""Events become batches: a bounded buffer drained by one background thread.

One thread per process sends at most one request at a time. A transient failure pauses
delivery (exponential backoff with full jitter, or the ingest's Retry-After) while events keep
arriving in the bounded buffer. A batch that fails ``MAX_ATTEMPTS`` times goes to the disk
spool, and so do full batches for as long as the ingest stays down; once a request succeeds
again, the spool is replayed oldest first, a few batches per cycle.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from beacon_otel import cooperative
from beacon_otel.event import RequestEvent, encode_events
from beacon_otel.stats import DeliveryError, DeliveryStats
from beacon_otel.transport import Outcome, Verdict, backoff_delay

logger = logging.getLogger("beacon_otel")

MAX_ATTEMPTS = 6
"""Attempts per batch before it is spooled (about a minute of backoff in all)."""
REPLAY_BATCHES_PER_CYCLE = 10
REPLAY_PAUSE = 0.2
"""Seconds between replay cycles while the spool still holds batches and the ingest is up."""


class Transport(Protocol):
    """Anything that can take an encoded batch: the HTTP transport or the dry-run sink."""

    def send(self, body: bytes, batch_id: str) -> Outcome: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class SpooledBatch(Protocol):
    """A batch leased from the spool."""

    body: bytes
    events: int

    def ack(self) -> None: ...

    def release(self) -> None: ...


class BatchStore(Protocol):
    """The disk spool, as the worker uses it."""

    def write(self, body: bytes, events: int) -> bool: ...

    def claim(self) -> SpooledBatch | None: ...

    def pending(self) -> int: ...


class _Batch:
    """Up to ``batch_size`` events; their wire form is made once, outside the worker's lock."""

    __slots__ = ("_body", "attempts", "batch_id", "events")

    def __init__(self, events: list[RequestEvent] | list[dict[str, Any]]) -> None:
        self.events: list[Any] = events
        self.attempts = 0
        # The Idempotency-Key: the same on every retry, so the ingest can tell a resend.
        self.batch_id = uuid.uuid4().hex
        self._body: bytes | None = None

    def body(self) -> bytes:
        """The request body; from then on ``events`` holds the wire dicts."""
        # Encoded once: retries and the spool send the same bytes.
        if self._body is None:
            self.events = _wire(self.events)
            self._body = encode_events(self.events)
        return self._body


def _wire(events: list[Any]) -> list[dict[str, Any]]:
    # The halves of a split batch are wire dicts already.
    return [event if type(event) is dict else event.as_dict() for event in events]


class DeliveryWorker:
    """Buffers events and delivers them in batches on one daemon thread, one request at a time."""

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
        spool: BatchStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_buffer = max_buffer_size
        self._shutdown_timeout = shutdown_timeout
        self._stats = stats
        self._report = report
        self._spool = spool
        self._clock = clock
        self._stopped = False
        self._reset_state()
        weak_self = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: (method := weak_self()) and method())
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        if spool is not None and _safe(spool.pending, 0):
            # Batches left by an earlier run: deliver them even if no request ever comes.
            with self._lock:
                thread = self._new_thread()
            thread.start()

    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._use(cooperative.primitives())
        self._buffer: collections.deque[RequestEvent] = collections.deque()
        self._pending: collections.deque[_Batch] = collections.deque()
        self._failures = 0  # consecutive transient failures: how unwell the ingest is
        self._retry_at = 0.0
        self._replay_at: float | None = None
        self._flush_requests = 0
        self._busy = False
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None

    def _use(self, primitives: cooperative.Primitives) -> None:
        self._primitives = primitives
        self._lock = primitives.lock
        self._wake = primitives.wake
        self._idle = primitives.idle

    def _check_process(self) -> None:
        """Fresh state after a fork, and primitives of the threading in force (gevent, eventlet)."""
        if self._pid != os.getpid():
            # uWSGI and friends fork from C without running at-fork hooks.
            self._after_fork_in_child()
        if self._thread is None and not self._primitives.is_current():
            # Patched since they were made (a gevent worker patches after the fork): no thread
            # of ours runs yet, so nothing waits on the old ones.
            self._use(cooperative.primitives())

    # -- request path --------------------------------------------------------------------

    def submit(self, event: RequestEvent) -> bool:
        """Queue one event without blocking; returns False if it was refused (and counted)."""
        self._check_process()
        thread = None
        with self._lock:
            if self._stopped:
                self._stats.drop("after_shutdown")
                return False
            # The stats are written here under the worker's lock, their one writer on this
            # path: no second lock per request.
            stats = self._stats
            if len(self._buffer) >= self._max_buffer:
                self._buffer.popleft()  # the oldest goes first: recent traffic matters most
                stats.buffer_full += 1
            self._buffer.append(event)
            stats.queued += 1
            if self._thread is None:
                thread = self._new_thread()
            elif len(self._buffer) == self._batch_size:
                self._wake.notify()
        if thread is not None:
            # Started with no lock held: under gevent, start() switches to the new greenlet,
            # and a greenlet must never switch away while holding a lock another one needs.
            thread.start()
        return True

    def buffered(self) -> int:
        """Events waiting in memory, in the buffer or in batches awaiting a retry."""
        with self._lock:
            return self._in_memory()

    def _in_memory(self) -> int:
        return len(self._buffer) + sum(len(batch.events) for batch in self._pending)

    # -- control ---------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Deliver everything buffered now; True if done within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        self._check_process()
        thread = None
        with self._lock:
            if self._thread is None and not self._buffer and not self._pending:
                return True
            if self._thread is None:
                thread = self._new_thread()
        if thread is not None:
            thread.start()
        with self._lock:
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
        """Flush within ``timeout`` seconds, then stop; what is left goes to the spool."""
        timeout = self._shutdown_timeout if timeout is None else timeout
        self._check_process()
        new_thread = None
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping = True
            self._deadline = self._clock() + timeout
            if self._thread is None and (self._buffer or self._pending):
                new_thread = self._new_thread()
            thread = self._thread
            self._wake.notify()
        if new_thread is not None:
            new_thread.start()
        if thread is not None and thread.ident is not None:  # not yet started: nothing to wait for
            # Bounded even when a request hangs: the thread is a daemon and is left behind.
            thread.join(timeout)
        with self._lock:
            batches = list(self._pending)
            self._pending.clear()
            events = list(self._buffer)
            self._buffer.clear()
        # A batch still in flight on a hung connection is kept too: delivery is at least once.
        batches += [_Batch(events[i : i + self._batch_size]) for i in range(0, len(events), self._batch_size)]
        for batch in batches:
            self._keep_for_later(batch, reason="shutdown")
        self._transport.close()

    # -- background thread -----------------------------------------------------------------

    def _new_thread(self) -> threading.Thread:
        """The delivery thread, recorded under the lock; the caller starts it once it lets go."""
        thread = cooperative.daemon_thread(self._run, "beacon-otel-delivery")
        self._thread = thread
        return thread

    def _run(self) -> None:
        next_flush = self._clock() + self._interval
        if self._spool is not None:
            self._replay_at = self._clock()
        while True:
            with self._lock:
                while not self._should_work(next_flush):
                    self._wake.wait(self._seconds_until(next_flush))
                stopping = self._stopping
                # Partial batches wait for the interval, a flush or shutdown: fewer, fuller requests.
                drain_all = stopping or self._flush_requests > 0 or self._clock() >= next_flush
            try:
                self._cycle(stopping, drain_all)
            except Exception:  # the delivery thread must outlive any bug of ours
                logger.exception("beacon-otel delivery cycle failed")
            now = self._clock()
            if now >= next_flush:
                next_flush = now + self._interval
            if stopping:
                return

    def _should_work(self, next_flush: float) -> bool:
        if self._stopping:
            return True
        now = self._clock()
        if (
            self._spool is not None
            and self._failures >= MAX_ATTEMPTS
            and len(self._buffer) >= self._batch_size
        ):
            return True  # the ingest is down: full batches go to disk now, not after the backoff
        if now < self._retry_at:
            return False
        if self._pending:
            return True
        if self._replay_at is not None and now >= self._replay_at:
            return True
        return bool(self._buffer) and (
            len(self._buffer) >= self._batch_size or self._flush_requests > 0 or now >= next_flush
        )

    def _seconds_until(self, next_flush: float) -> float:
        now = self._clock()
        wake_at = next_flush
        if self._replay_at is not None:
            wake_at = min(wake_at, self._replay_at)
        if self._retry_at > now:
            wake_at = self._retry_at
        return max(0.001, wake_at - now)

    def _cycle(self, stopping: bool, drain_all: bool) -> None:
        self._deliver_due(stopping, drain_all)
        if self._spool is None:
            return
        if stopping:
            return
        if self._failures >= MAX_ATTEMPTS:
            self._spool_full_batches()
        # A spooled batch doubles as the probe that tells when the ingest is back.
        self._replay()

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
                    self._pending.append(_Batch(events))  # wire dicts made by body(), outside the lock
                batch = self._pending[0]
                self._busy = True
            try:
                verdict = self._attempt(batch, stopping)
            finally:
                with self._lock:
                    self._busy = False
                    self._idle.notify_all()
            if verdict is Verdict.RETRY:
                break
        with self._lock:
            self._idle.notify_all()

    def _attempt(self, batch: _Batch, stopping: bool) -> Verdict:
        outcome = self._safe_send(batch.body(), batch.batch_id)
        batch.attempts += 1
        verdict = outcome.verdict
        if verdict is Verdict.ACCEPTED:
            self._forget(batch)
            self._stats.add("sent", len(batch.events))
            self._healthy()
        elif verdict is Verdict.SPLIT and len(batch.events) > 1:
            half = len(batch.events) // 2
            with self._lock:
                self._pending.popleft()
                self._pending.extendleft([_Batch(batch.events[half:]), _Batch(batch.events[:half])])
        elif verdict is Verdict.RETRY:
            self._unwell(outcome)
            if stopping:
                return verdict  # shutdown keeps what is left for the spool
            if batch.attempts >= MAX_ATTEMPTS or (self._failures > MAX_ATTEMPTS and self._spool):
                self._forget(batch)
                self._keep_for_later(batch, reason="retries_exhausted", outcome=outcome)
            else:
                self._stats.add("retried", len(batch.events))
        else:
            self._forget(batch)
            self._stats.drop("rejected", len(batch.events))
            self._report(DeliveryError("rejected", len(batch.events), outcome))
        return verdict

    def _healthy(self) -> None:
        self._failures = 0
        self._retry_at = 0.0

    def _unwell(self, outcome: Outcome) -> None:
        self._failures += 1
        delay = backoff_delay(self._failures - 1)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        self._retry_at = self._clock() + delay
        logger.debug("Beacon ingest unavailable (%s); next attempt in %.1fs", outcome, delay)

    def _keep_for_later(self, batch: _Batch, *, reason: str, outcome: Outcome | None = None) -> None:
        """Spool a batch that cannot go now; without a spool it is lost, counted and reported."""
        body = batch.body()
        count = len(batch.events)
        if self._spool is not None and _safe(lambda: self._spool.write(body, count), False):
            self._stats.add("spooled", count)
            with self._lock:
                if self._replay_at is None:
                    self._replay_at = self._clock()
            return
        self._stats.drop(reason, count)
        self._report(DeliveryError(reason, count, outcome))

    def _spool_full_batches(self) -> None:
        """While the ingest is down, full batches wait on disk rather than in memory."""
        while True:
            with self._lock:
                if len(self._buffer) < self._batch_size:
                    return
                events = [self._buffer.popleft() for _ in range(self._batch_size)]
            self._keep_for_later(_Batch(events), reason="retries_exhausted")

    def _replay(self) -> None:
        """Send a few spooled batches, oldest first; stop at the first failure."""
        assert self._spool is not None
        for _ in range(REPLAY_BATCHES_PER_CYCLE):
            if self._stopping or self._clock() < self._retry_at:
                return
            spooled = _safe(self._spool.claim, None)
            if spooled is None:
                with self._lock:
                    self._replay_at = None
                return
            # The spool does not keep batch ids yet: a replay is a new key for the ingest.
            outcome = self._safe_send(spooled.body, uuid.uuid4().hex)
            if outcome.verdict is Verdict.ACCEPTED:
                # Counted before the file goes: whoever sees the spool empty sees the count.
                self._stats.add("recovered", spooled.events)
                _safe(spooled.ack, None)
                self._healthy()
            elif outcome.verdict is Verdict.RETRY:
                _safe(spooled.release, None)
                self._unwell(outcome)
                return
            else:
                # Refused for good (or too large to split from disk): it would never go.
                _safe(spooled.ack, None)
                self._stats.drop("rejected", spooled.events)
                self._report(DeliveryError("rejected", spooled.events, outcome))
        with self._lock:
            self._replay_at = self._clock() + REPLAY_PAUSE

    def _forget(self, batch: _Batch) -> None:
        with self._lock:
            if self._pending and self._pending[0] is batch:
                self._pending.popleft()

    def _safe_send(self, body: bytes, batch_id: str) -> Outcome:
        try:
            return self._transport.send(body, batch_id)
        except Exception as exc:  # a transport must not kill the delivery thread
            logger.debug("Beacon transport failed", exc_info=True)
            return Outcome(Verdict.RETRY, detail=f"transport error: {type(exc).__name__}")

    def _after_fork_in_child(self) -> None:
        # Events buffered before the fork belong to the parent, which delivers them;
        # locks, the thread and the HTTP connection pool must not be shared.
        self._reset_state()
        self._transport.reset()


def _safe(call: Callable[[], Any], default: Any) -> Any:
    # The spool never raises by contract; this keeps a surprise from stopping delivery.
    try:
        return call()
    except Exception:
        logger.debug("beacon-otel spool call failed", exc_info=True)
        return default


def _shutdown_at_exit(ref: weakref.ref[DeliveryWorker]) -> None:
    # The provider's own exit handler usually gets here first; shutdown is idempotent.
    worker = ref()
    if worker is not None and worker._pid == os.getpid():
        worker.shutdown()
