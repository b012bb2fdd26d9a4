"""When the delivery thread works, and how long it sleeps in between.

The thread wakes for a reason (:class:`Wake`): shutdown, memory filling while the ingest is
down, a batch due (full, to retry, flushed, or the interval is up), or the spool to replay.
Flushes and shutdown ask through here and wait on the same conditions. What the thread then
does is :mod:`beacon_otel.delivery.cycle`'s business.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from beacon_otel.common.cooperative import Primitives
from beacon_otel.delivery.attempt import Delivery
from beacon_otel.delivery.buffer import EventBuffer

FIRST_FLUSH = 1.0
"""Seconds the first partial batch of a process waits at most, whatever ``flush_interval`` says:
a newly started service (or a developer's first request) shows in Beacon at once, and the usual
interval applies from then on."""


class Wake(enum.Enum):
    """Why the delivery thread is awake."""

    STOP = "stop"  # shutdown: deliver what can go before the deadline, spool the rest
    OFFLOAD = "offload"  # the ingest is down and memory is filling: to disk
    SEND = "send"  # a full batch, a batch to retry, a flush, or the interval is up
    REPLAY = "replay"  # the spool may hold batches and the ingest may take them


class DeliverySchedule:
    """Decides, under the worker's lock, whether the delivery thread works now and on what."""

    def __init__(
        self,
        delivery: Delivery,
        sync: Primitives,
        *,
        batch_size: int,
        flush_interval: float,
        max_buffer_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.delivery = delivery
        self.buffer = EventBuffer(max_size=max_buffer_size, clock=clock, lost=delivery.lost)
        """What waits in memory."""
        self.sync = sync
        """The worker's lock (every method here is called with it held) and its two conditions."""
        self.batch_size = batch_size
        self._interval = flush_interval
        self._partial_wait = min(flush_interval, FIRST_FLUSH)
        """How long a partial batch waits: ``FIRST_FLUSH`` until the first batch went, then the interval."""
        self.clock = clock
        self._flush_requests = 0  # flushes waiting: a partial batch goes now
        self.busy = False
        """A request is in flight, or a write to the spool."""
        self.offloading = 0
        """Events on their way to the spool: out of the buffer, not yet on disk.

        Not counted against the buffer size, so a slow write leaves all of memory to the requests
        that keep coming; what memory holds is bounded by the buffer size plus one write
        (``cycle.SPOOL_WRITE_BATCHES`` batches)."""
        self.in_flight_since: float | None = None
        """``time.monotonic()`` when the request in flight (live or replayed) began; None between."""
        self.stopping = False
        self.deadline = 0.0
        """At shutdown: when sending stops and the rest goes to the spool."""

    def wait_for_work(self) -> Wake:
        """Sleep until there is a reason to work (the wait lets go of the lock)."""
        wake = self.why_awake()
        while wake is None:
            self.sync.wake.wait(self.seconds_to_sleep())
            wake = self.why_awake()
        return wake

    def flushed_by(self, deadline: float) -> bool:
        """Have a partial batch go and wait for memory to empty; False at ``deadline``."""
        self._flush_requests += 1
        self.sync.wake.notify()
        try:
            while self.buffer or self.busy:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return False
                self.sync.idle.wait(remaining)
            return True
        finally:
            self._flush_requests -= 1

    def stop(self, deadline: float) -> None:
        """Send what can go until ``deadline``, then end the thread."""
        self.stopping = True
        self.deadline = deadline
        self.sync.wake.notify()

    def batch_limit(self) -> int:
        """Events per batch: the configured size, or what the ingest took when it said 413."""
        return self.delivery.batch_limit(self.batch_size)

    def live_batch_due(self) -> bool:
        """A batch to retry, a full one, or a partial one after a flush or the interval."""
        buffer = self.buffer
        if buffer.batches or buffer.events >= self.batch_limit():
            return True
        return buffer.events > 0 and (
            self._flush_requests > 0 or self.stopping or self.clock() >= buffer.oldest_at + self._partial_wait
        )

    def should_offload(self) -> bool:
        """Memory is filling, or a flush waits out a backoff, and the disk takes batches."""
        delivery = self.delivery
        if not delivery.spool.ready():
            return False
        if self._flush_requests > 0 and self.buffer and not delivery.health.ready():
            # A flush would wait for the backoff and the retries after it: on AWS Lambda that
            # is every invocation, up to its flush timeout. The disk takes the events at once.
            return True
        return self.buffer.should_spill(
            self.batch_limit(), batch_size=self.batch_size, failing=delivery.health.failing
        )

    def why_awake(self) -> Wake | None:
        """The reason to work now, or None to sleep (then flushes waiting on memory may return)."""
        if self.stopping:
            return Wake.STOP
        delivery = self.delivery
        if self.should_offload():
            return Wake.OFFLOAD  # even during a backoff: the disk does not need the ingest
        if not delivery.health.ready():
            return None
        if self.live_batch_due():
            return Wake.SEND
        if delivery.spool.has_backlog():
            return Wake.REPLAY
        self.sync.idle.notify_all()  # nothing left to do: flushes may return
        return None

    def live_batch_taken(self) -> None:
        """A live batch is on its way: partial batches wait the interval from now on.

        Noted when the batch is taken, not when the thread wakes for it: the send step checks
        ``live_batch_due`` again, and a first partial batch must still be due then.
        """
        self._partial_wait = self._interval

    @property
    def first_batch_pending(self) -> bool:
        """No live batch went yet, so a partial one waits ``FIRST_FLUSH``, not the interval."""
        return self._partial_wait < self._interval

    def seconds_to_sleep(self) -> float:
        """How long to sleep when there is nothing to do: until a partial batch is due, the spool is
        worth a look or the backoff ends, whichever is first (never before the backoff ends)."""
        now = self.clock()
        wake_at = now + self._interval
        if self.buffer.batches:
            wake_at = now  # a batch to retry: as soon as the backoff allows
        elif self.buffer.events:
            wake_at = min(wake_at, self.buffer.oldest_at + self._partial_wait)
        wake_at = min(wake_at, now + self.delivery.spool.seconds_to_next_look())
        # Nothing goes out during a backoff; offloading to disk is woken by submit().
        wake_at = max(wake_at, now + self.delivery.health.seconds_to_wait())
        return max(0.001, wake_at - now)
