"""What the delivery thread does: wait for a reason, then one step of work, until shutdown.

A step puts what would fill memory on disk while the ingest is down, or sends one live batch
and then one spooled batch, so a backlog catches up while traffic flows. At shutdown it sends
what the deadline allows and the worker spools the rest. When to work is
:mod:`beacon_otel.delivery.schedule`'s decision, what an answer means :mod:`beacon_otel.delivery.attempt`'s.
"""

from __future__ import annotations

import time

from beacon_otel.common import guard
from beacon_otel.contract.batch import Batch
from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.schedule import DeliverySchedule, Wake

SPOOL_WRITE_BATCHES = 10
"""Batches' worth of events the spool takes in one file, at most, when that many wait in memory.

Each file costs an fsync and a few system calls, and a thread that gives up the GIL for each one
waits to get it back behind a busy server: 10 to 50 ms a file under a saturated uvicorn. At one
batch a file, a burst of 2,000 requests a second into a 200-event buffer lost 13% of its events
with a 10 ms fsync; with everything waiting in one file, none. Such a file goes as one request when
the ingest is back, larger than ``batch_size`` (a 413 splits it as it splits any batch)."""


class DeliveryCycle:
    """The delivery thread's loop; each step takes the worker's lock only around the buffer."""

    def __init__(self, schedule: DeliverySchedule) -> None:
        self._schedule = schedule
        self._delivery = schedule.delivery
        self._buffer = schedule.buffer

    def run(self) -> None:
        """The thread's body: returns once shutdown has sent what it could."""
        schedule = self._schedule
        while True:
            with schedule.sync.lock:
                wake = schedule.wait_for_work()
            # The delivery thread must outlive any bug of ours (re-raised only under tests).
            with guard.contained("a delivery cycle"):
                if wake is Wake.STOP:
                    self._drain_until_deadline()
                    return
                self._step(wake)

    def _step(self, wake: Wake) -> None:
        """Offload to disk, or one live batch then one spooled batch."""
        if wake is Wake.OFFLOAD:
            self._offload()
            return
        self._send_live()
        if self._delivery.health.ready() and self._delivery.spool.has_backlog():
            self._replay_one()

    def _offload(self) -> None:
        """While the ingest is down, batches beyond the one being retried wait on disk.

        What waits is written as one file, up to ``SPOOL_WRITE_BATCHES`` whole batches, and turned
        into JSON outside the lock.
        """
        schedule, buffer = self._schedule, self._buffer
        while True:
            popped: list[RequestEvent] = []
            batch: Batch | None = None
            with schedule.sync.lock:
                if not schedule.should_offload():
                    # A flush waiting on memory may return now, even while the ingest backs off.
                    schedule.sync.idle.notify_all()
                    return
                limit = schedule.batch_limit()
                if buffer.batches > 1 or (buffer.batches and not buffer.events):
                    batch = buffer.take_newest()
                else:
                    # Whole batches (a flush's partial one alone), so the spool's files replay as
                    # full requests; what is left is less than a batch, taken by the next write.
                    whole = min(SPOOL_WRITE_BATCHES, buffer.events // limit)
                    popped = buffer.pop(limit * max(1, whole))
                schedule.busy = True  # out of memory, not on disk yet: a flush must wait for it
                schedule.offloading = len(batch) if batch is not None else len(popped)
            kept = False
            try:
                if batch is None:
                    texts = buffer.encode(popped)
                    if texts:  # else nothing in it could be sent: counted lost by the buffer
                        batch = Batch.encoded(texts)
                kept = batch is None or self._delivery.keep(batch)
            finally:
                with schedule.sync.lock:
                    schedule.busy = False
                    schedule.offloading = 0
                    if batch is not None and not kept:
                        # The disk said no: it waits in memory after all, in batches of the usual size.
                        for part in batch.split(limit) if len(batch) > limit else [batch]:
                            buffer.keep(part)
            if not kept:
                return

    def _send_live(self) -> None:
        schedule = self._schedule
        with schedule.sync.lock:
            if not schedule.live_batch_due():
                return
            batch = self._buffer.head(schedule.batch_limit())
            if batch is None:
                return
            schedule.live_batch_taken()
            schedule.busy = True
            schedule.in_flight_since = time.monotonic()
        try:
            settled, follow_ups = self._delivery.attempt(batch, stopping=schedule.stopping)
        finally:
            with schedule.sync.lock:
                schedule.busy = False
                schedule.in_flight_since = None
                if settled:
                    self._buffer.settled(batch)
                self._buffer.requeue(follow_ups)
                schedule.sync.idle.notify_all()

    def _replay_one(self) -> None:
        """Send the oldest spooled batch; the halves of a split wait in memory."""
        spool = self._delivery.spool
        batch = spool.next_batch()
        if batch is None:
            return
        with self._schedule.sync.lock:
            self._schedule.in_flight_since = time.monotonic()
        try:
            settled, follow_ups = self._delivery.attempt(batch, stopping=False)
        finally:
            with self._schedule.sync.lock:
                self._schedule.in_flight_since = None
        if not settled:
            spool.give_back(batch)
        if follow_ups:
            with self._schedule.sync.lock:
                self._buffer.requeue(follow_ups)

    def _drain_until_deadline(self) -> None:
        """At shutdown: send while the deadline and the ingest allow."""
        schedule, health = self._schedule, self._delivery.health
        while True:
            with schedule.sync.lock:
                if schedule.clock() >= schedule.deadline or not self._buffer:
                    break
                if not health.ready() or health.hung:
                    break
                self._buffer.batch_everything(schedule.batch_limit())
            self._send_live()
        with schedule.sync.lock:
            schedule.sync.idle.notify_all()
