"""Events become batches: a bounded buffer drained by one background thread.

One thread per process sends at most one request at a time. The request path only appends to
the buffer (:mod:`beacon_otel.delivery.buffer`). This module owns the thread's life: started lazily,
woken, joined at shutdown, made again in a forked child and with the primitives of gevent or
eventlet once they patch. When the thread works is :mod:`beacon_otel.delivery.schedule`'s decision, what
it does :mod:`beacon_otel.delivery.cycle`'s.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable

from beacon_otel.common import cooperative
from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.attempt import Delivery
from beacon_otel.delivery.cycle import DeliveryCycle
from beacon_otel.delivery.schedule import DeliverySchedule

IN_FLIGHT_PATIENCE = 1.0
"""Seconds a shutdown waits on one request in flight. A healthy ingest answers well within it;
one that has not is taken as hung, and what is left goes to disk at once: a recycling worker
must not sit out its whole timeout while new requests queue behind it. The batch in flight is
spooled too, with its Idempotency-Key, so the ingest stores it once if both arrive. Without a
spool, giving up would lose the events: then the shutdown waits out its whole timeout."""


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
        self._stats = delivery.stats
        # Made again in a forked child, with fresh primitives and an empty buffer.
        self._new_schedule = functools.partial(
            DeliverySchedule,
            delivery,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer_size=max_buffer_size,
            clock=clock,
        )
        self._shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._stopped = False
        self._reset_state()
        weak_self = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: (method := weak_self()) and method())
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        if delivery.spool.pending() > 0:
            # Batches left by an earlier run: deliver them even if no request ever comes.
            with self._sync.lock:
                thread = self._new_thread()
            thread.start()

    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._sync = cooperative.primitives()
        self._schedule = self._new_schedule(self._sync)
        self._buffer = self._schedule.buffer
        self._thread: threading.Thread | None = None

    @property
    def _busy(self) -> bool:
        """A request is in flight (read by tests that hold the ingest)."""
        return self._schedule.busy

    def _check_process(self) -> None:
        """Fresh state after a fork, and primitives of the threading in force (gevent, eventlet)."""
        if self._pid != os.getpid():
            # uWSGI and friends fork from C without running at-fork hooks.
            self._after_fork_in_child()
        if self._thread is None and not self._sync.is_current():
            # Patched since (gevent workers patch after the fork); no thread of ours waits on them.
            self._sync = self._schedule.sync = cooperative.primitives()

    def _after_fork_in_child(self) -> None:
        # Events buffered before the fork belong to the parent, which delivers them;
        # locks, the thread and the HTTP connection pool must not be shared.
        self._reset_state()
        self._delivery.reset()

    # -- request path --------------------------------------------------------------------

    def submit(self, event: RequestEvent) -> bool:
        """Queue one event without blocking; returns False if it was refused (and counted)."""
        if self._pid != os.getpid() or self._thread is None:
            self._check_process()  # after a fork, or before the thread's first start
        thread = None
        with self._sync.lock:
            if self._stopped:
                self._delivery.lost("after_shutdown", 1)
                return False
            buffer = self._buffer
            waiting = buffer.add(event)
            if not waiting:
                # Memory is full and the spool could not take more: the oldest goes first,
                # recent traffic matters most.
                self._delivery.lost("buffer_full", 1)
                if not buffer.drop_oldest():
                    return False  # memory is all batches being retried: the new one goes
                waiting = buffer.add(event)
            self._stats.queued_events += 1  # the only writer, under the lock: no call per event
            if self._thread is None:
                thread = self._new_thread()
            elif waiting % self._schedule.batch_size == 0:
                self._sync.wake.notify()  # a full batch, or memory filling: the thread decides
            elif waiting == 1 and self._schedule.first_batch_pending:
                # A thread started early (a spool left by an earlier run) sleeps the whole
                # interval on empty memory: the first event of a process wakes it to FIRST_FLUSH.
                self._sync.wake.notify()
        if thread is not None:
            # Started with no lock held: under gevent, start() switches to the new greenlet,
            # and a greenlet must never switch away while holding a lock another one needs.
            thread.start()
        return True

    def buffered(self) -> int:
        """Events waiting in memory: in the buffer, in batches awaiting a retry, or being spooled."""
        with self._sync.lock:
            return self._buffer.unsent() + self._schedule.offloading

    # -- control ---------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Deliver everything buffered now; True if done within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        self._check_process()
        with self._sync.lock:
            if self._stopped:
                return True  # shut down: what was left is on disk or counted lost
            if self._thread is None and not self._buffer:
                return True
            thread = self._new_thread() if self._thread is None else None
        if thread is not None:
            thread.start()
        with self._sync.lock:
            return self._schedule.flushed_by(deadline)

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` seconds, then stop; what is left goes to the spool."""
        timeout = self._shutdown_timeout if timeout is None else timeout
        self._check_process()
        with self._sync.lock:
            if self._stopped:
                return
            self._stopped = True
            if self._delivery.health.hung:
                # Known hung: a flush would only wait out the deadline. Spool now and go.
                timeout = 0.0
            self._schedule.stop(self._clock() + timeout)
            new_thread = self._new_thread() if self._thread is None and self._buffer else None
            thread = self._thread
        if new_thread is not None:
            new_thread.start()
        if thread is not None and thread.ident is not None:  # not yet started: nothing to wait for
            # Bounded even when a request hangs: the thread is a daemon and is left behind.
            patience = IN_FLIGHT_PATIENCE if self._delivery.spool.configured else timeout
            _join_unless_hung(thread, self._schedule, timeout, patience)
        with self._sync.lock:
            batches = self._buffer.take_all(self._schedule.batch_limit())
        # A batch still in flight on a hung connection is kept too: its Idempotency-Key lets the
        # ingest store it once if both arrive.
        # One line with the total: a line per batch would be cut to the first by the once-a-minute
        # limit, and say "50 not delivered" before a summary of 2,000 dropped.
        unsent = sum(len(batch) for batch in batches if not self._delivery.spool.keep(batch))
        if unsent:
            self._delivery.lost("shutdown", unsent)
        self._delivery.close()

    # -- background thread -----------------------------------------------------------------

    def _new_thread(self) -> threading.Thread:
        """The delivery thread, recorded under the lock; the caller starts it once it lets go."""
        thread = cooperative.daemon_thread(DeliveryCycle(self._schedule).run, "beacon-otel-delivery")
        self._thread = thread
        return thread


def _join_unless_hung(
    thread: threading.Thread, schedule: DeliverySchedule, timeout: float, patience: float
) -> None:
    """Wait for the drain up to ``timeout``, but not on a request in flight past ``patience``."""
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        now = time.monotonic()
        with schedule.sync.lock:
            since = schedule.in_flight_since
        if now >= deadline or (since is not None and now - since >= patience):
            return
        thread.join(min(deadline - now, 0.05))


def _shutdown_at_exit(ref: weakref.ref[DeliveryWorker]) -> None:
    # The provider's own exit handler usually gets here first; shutdown is idempotent.
    worker = ref()
    if worker is not None and worker._pid == os.getpid():
        worker.shutdown()
