"""Events become batches: a bounded buffer drained by one background thread.

One thread per process sends at most one request at a time. The request path only appends to
the buffer. The thread wakes for a reason (:class:`Wake`) and does one step of work per cycle:
put what would fill memory on disk while the ingest is down, send one live batch, send one
spooled batch. How the ingest is doing is :mod:`beacon_otel.health`'s business, when batches go
to disk and come back :mod:`beacon_otel.spooling`'s, and what the user reads
:mod:`beacon_otel.delivery_log`'s.
"""

from __future__ import annotations

import atexit
import collections
import enum
import os
import threading
import time
import weakref
from collections.abc import Callable

from beacon_otel import cooperative, guard
from beacon_otel.batch import Batch
from beacon_otel.delivery import Delivery
from beacon_otel.event import RequestEvent


class Wake(enum.Enum):
    """Why the delivery thread is awake."""

    STOP = "stop"  # shutdown: deliver what can go before the deadline, spool the rest
    OFFLOAD = "offload"  # the ingest is down and memory is filling: to disk
    SEND = "send"  # a full batch, a batch to retry, a flush, or the interval is up
    REPLAY = "replay"  # the spool may hold batches and the ingest may take them


class DeliveryWorker:
    """Buffers events and delivers them in batches on one daemon thread, one request at a time."""

    def __init__(
        self,
        delivery: Delivery,
        *,
        batch_size: int,
        flush_interval: float,
        max_buffer_size: int,
        shutdown_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._delivery = delivery
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_buffer = max_buffer_size
        # While the ingest fails, every full batch goes to disk: the rest of the buffer is the
        # headroom for a burst while each batch is written (an fsync can take tens of ms).
        self._offload_at = batch_size
        self._shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._stopped = False
        self._reset_state()
        weak_self = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: (method := weak_self()) and method())
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        if delivery.has_backlog_at_start():
            # Batches left by an earlier run: deliver them even if no request ever comes.
            with self._lock:
                thread = self._new_thread()
            thread.start()

    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._use(cooperative.primitives())
        self._buffer: collections.deque[RequestEvent] = collections.deque()
        self._oldest_at = 0.0  # when the oldest buffered event arrived
        self._pending: collections.deque[Batch] = collections.deque()  # made, not yet settled
        self._pending_events = 0
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
                self._delivery.lost("after_shutdown", 1)
                return False
            buffer = self._buffer
            if len(buffer) + self._pending_events >= self._max_buffer:
                # Memory is full and the spool could not take more: the oldest goes first,
                # recent traffic matters most.
                self._delivery.lost("buffer_full", 1)
                if not buffer:
                    return False  # memory is all batches being retried: the new one goes
                buffer.popleft()
            if not buffer:
                self._oldest_at = self._clock()
            buffer.append(event)
            self._delivery.queued()
            if self._thread is None:
                thread = self._new_thread()
            elif len(buffer) % self._batch_size == 0:
                self._wake.notify()  # a full batch, or memory filling: the thread decides
        if thread is not None:
            # Started with no lock held: under gevent, start() switches to the new greenlet,
            # and a greenlet must never switch away while holding a lock another one needs.
            thread.start()
        return True

    def buffered(self) -> int:
        """Events waiting in memory, in the buffer or in batches awaiting a retry."""
        with self._lock:
            return len(self._buffer) + self._pending_events

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
            self._stopped = self._stopping = True
            if self._delivery.health.hung:
                # Known hung: a flush would only wait out the deadline. Spool now and go.
                timeout = 0.0
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
            self._pending_events = 0
            batches += self._cut(len(self._buffer))
        # A batch still in flight on a hung connection is kept too: its Idempotency-Key lets the
        # ingest store it once if both arrive.
        for batch in batches:
            self._delivery.keep_or_lose(batch, reason="shutdown")
        self._delivery.close()

    # -- background thread -----------------------------------------------------------------

    def _new_thread(self) -> threading.Thread:
        """The delivery thread, recorded under the lock; the caller starts it once it lets go."""
        thread = cooperative.daemon_thread(self._run, "beacon-otel-delivery")
        self._thread = thread
        return thread

    def _run(self) -> None:
        while True:
            with self._lock:
                wake = self._why_awake()
                while wake is None:
                    self._wake.wait(self._seconds_to_sleep())
                    wake = self._why_awake()
            # The delivery thread must outlive any bug of ours (re-raised only under tests).
            with guard.contained("a delivery cycle"):
                if wake is Wake.STOP:
                    self._drain_until_deadline()
                    return
                self._cycle(wake)

    def _why_awake(self) -> Wake | None:
        """The reason to work now, or None to sleep; called with the lock held."""
        if self._stopping:
            return Wake.STOP
        delivery = self._delivery
        if self._should_offload():
            return Wake.OFFLOAD  # even during a backoff: the disk does not need the ingest
        if not delivery.health.ready():
            return None
        if self._live_batch_due():
            return Wake.SEND
        if delivery.replay_due():
            return Wake.REPLAY
        self._idle.notify_all()  # nothing left to do: flushes may return
        return None

    def _live_batch_due(self) -> bool:
        """A batch to retry, a full one, or a partial one after a flush or the interval; lock held."""
        if self._pending or len(self._buffer) >= self._delivery.batch_limit(self._batch_size):
            return True
        return bool(self._buffer) and (
            self._flush_requests > 0 or self._stopping or self._clock() >= self._oldest_at + self._interval
        )

    def _seconds_to_sleep(self) -> float:
        now = self._clock()
        wake_at = now + self._interval
        if self._pending:
            wake_at = now  # a batch to retry: as soon as the backoff allows
        elif self._buffer:
            wake_at = min(wake_at, self._oldest_at + self._interval)
        if self._delivery.spooling:
            wake_at = min(wake_at, now + self._delivery.replay_recheck_in())
        # Nothing goes out during a backoff; offloading to disk is woken by submit().
        wake_at = max(wake_at, now + self._delivery.health.seconds_to_wait())
        return max(0.001, wake_at - now)

    def _should_offload(self) -> bool:
        """Memory is filling and the disk takes batches; called with the lock held.

        Memory first: while the ingest answers, batches wait in memory until it is nearly full.
        Once a request has failed, every full batch goes to disk, so the whole buffer is
        headroom for a burst while the thread writes (measured: with memory keeping half the
        buffer, a 3,000-request burst into a 200-event buffer overflowed it in 1 run of 6).
        """
        delivery = self._delivery
        if not (delivery.spooling and delivery.disk_ready()):
            return False
        if len(self._pending) > 1 and delivery.health.failing:
            return True  # batches the disk refused earlier, or halves of a split
        limit = delivery.batch_limit(self._batch_size)
        if len(self._buffer) < limit:
            return False
        high_water = self._offload_at if delivery.health.failing else self._max_buffer - limit
        return self._unsent() >= high_water

    def _unsent(self) -> int:
        return len(self._buffer) + self._pending_events

    def _cut(self, count: int) -> list[Batch]:
        """Take ``count`` buffered events as batches; called with the lock held."""
        size = self._delivery.batch_limit(self._batch_size)
        events = [self._buffer.popleft().as_dict() for _ in range(min(count, len(self._buffer)))]
        if self._buffer:
            self._oldest_at = self._clock()  # close enough: the rest arrived after the cut
        return [Batch(events[i : i + size]) for i in range(0, len(events), size)]

    def _cycle(self, wake: Wake) -> None:
        """One step: offload to disk, then one live batch, then one spooled batch."""
        if wake is Wake.OFFLOAD:
            self._offload()
            return
        self._send_live()
        if self._delivery.health.ready() and self._delivery.replay_due():
            self._delivery.replay_one(self._requeue)

    def _offload(self) -> None:
        """While the ingest is down, batches beyond the one being retried wait on disk."""
        while True:
            with self._lock:
                if not self._should_offload():
                    return
                if len(self._pending) > 1:
                    batch = self._pending.pop()  # the newest; the head keeps probing the ingest
                    self._pending_events -= len(batch)
                else:
                    batch = self._cut(self._delivery.batch_limit(self._batch_size))[0]
            if not self._delivery.keep(batch):
                with self._lock:
                    self._pending.append(batch)  # the disk said no: it waits in memory after all
                    self._pending_events += len(batch)
                return

    def _send_live(self) -> None:
        with self._lock:
            if not self._live_batch_due():
                return
            if not self._pending:
                if not self._buffer:
                    return
                limit = self._delivery.batch_limit(self._batch_size)
                cut = self._cut(limit)[0]
                self._pending.append(cut)
                self._pending_events += len(cut)
            batch = self._pending[0]
            self._busy = True
        try:
            settled, follow_ups = self._delivery.attempt(batch, stopping=self._stopping)
        finally:
            with self._lock:
                self._busy = False
                if settled and self._pending and self._pending[0] is batch:
                    self._pending.popleft()
                    self._pending_events -= len(batch)
                self._requeue_locked(follow_ups)
                self._idle.notify_all()

    def _requeue(self, batches: list[Batch]) -> None:
        with self._lock:
            self._requeue_locked(batches)

    def _requeue_locked(self, batches: list[Batch]) -> None:
        # The halves of a split go first, in order: they are the oldest events.
        for batch in reversed(batches):
            self._pending.appendleft(batch)
            self._pending_events += len(batch)

    def _drain_until_deadline(self) -> None:
        """At shutdown: send while the deadline and the ingest allow; the caller spools the rest."""
        while True:
            with self._lock:
                deadline = self._deadline if self._deadline is not None else 0.0
                if self._clock() >= deadline or not (self._pending or self._buffer):
                    break
                if not self._delivery.health.ready() or self._delivery.health.hung:
                    break
                if not self._pending:
                    self._pending.extend(self._cut(len(self._buffer)))
                    self._pending_events = sum(len(batch) for batch in self._pending)
            self._send_live()
        with self._lock:
            self._idle.notify_all()

    def _after_fork_in_child(self) -> None:
        # Events buffered before the fork belong to the parent, which delivers them;
        # locks, the thread and the HTTP connection pool must not be shared.
        self._reset_state()
        self._delivery.reset()


def _shutdown_at_exit(ref: weakref.ref[DeliveryWorker]) -> None:
    # The provider's own exit handler usually gets here first; shutdown is idempotent.
    worker = ref()
    if worker is not None and worker._pid == os.getpid():
        worker.shutdown()
