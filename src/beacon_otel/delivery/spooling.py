"""When batches go to disk and come back: the delivery side of the spool.

Memory first, then disk, then drop. While the ingest is down, what would fill memory goes to
the spool at once; when the spool cannot take a batch (full, or the disk fails) the batch stays
in memory and the disk is tried again later. Once the ingest answers, spooled batches are sent
again, oldest first, one for each live batch, so a backlog catches up while traffic flows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from beacon_otel.common.guard import contained, guarded
from beacon_otel.contract.batch import Batch
from beacon_otel.delivery.log import DeliveryLog
from beacon_otel.delivery.stats import DeliveryStats, Fate

IDLE_RECHECK = 5.0
"""Seconds between looks at an empty spool: other processes sharing it may have written since."""
DISK_RETRY = 5.0
"""Seconds before the disk is tried again after it refused a batch (full, or an error)."""


class Lease(Protocol):
    """One batch leased from the spool."""

    body: bytes
    events: int
    batch_id: str

    def ack(self) -> None: ...

    def release(self) -> None: ...


class BatchStore(Protocol):
    """The disk spool (``spool.Spool``), as delivery uses it."""

    @property
    def problem(self) -> str | None: ...

    def write(self, body: bytes, events: int, batch_id: str) -> bool: ...

    def claim(self) -> Lease | None: ...

    def pending(self) -> int: ...


class SpoolPolicy:
    """Puts batches on disk and takes them back, counting and telling what happens."""

    configured = True
    """A spool is configured (:class:`NoSpool` says False)."""

    def __init__(
        self,
        spool: BatchStore,
        *,
        stats: DeliveryStats,
        log: DeliveryLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spool = spool
        self._stats = stats
        self._log = log
        self._clock = clock
        self._next_look = 0.0
        self._disk_retry_at = 0.0
        self._replayed = (0, 0)  # events and batches sent from the spool since the last line

    def problem(self) -> str | None:
        """Why the spool last refused a batch, in words; ``None`` when it did not."""
        return self._spool.problem

    def ready(self) -> bool:
        """Whether the disk may be tried (it refused a batch less than ``DISK_RETRY`` ago)."""
        return self._clock() >= self._disk_retry_at

    def has_backlog(self) -> bool:
        """Whether spooled batches may be waiting (checked on disk at most every few seconds)."""
        return self._clock() >= self._next_look

    def seconds_to_next_look(self) -> float:
        """Seconds until the spool is worth another look."""
        return max(0.0, self._next_look - self._clock())

    def noted_write(self) -> None:
        """A batch was just written: the next look must not wait."""
        self._next_look = 0.0

    def keep(self, batch: Batch) -> bool:
        """Write ``batch`` to disk; False when it cannot, and the disk then rests ``DISK_RETRY`` s."""
        if self._write(batch):
            return True
        self._disk_retry_at = self._clock() + DISK_RETRY
        return False

    @guarded("writing a batch to the spool", default=False)
    def _write(self, batch: Batch) -> bool:
        """Write ``batch`` to disk; False (and the reason logged once a minute) when it cannot."""
        if batch.spooled is not None:
            # Read back from disk and not settled: it is still there, give the lease back.
            batch.spooled.release()
            return True
        if self._spool.write(batch.body(), len(batch), batch.batch_id):
            self._stats.record(Fate.SPOOLED, len(batch))
            self.noted_write()
            return True
        problem = self._spool.problem
        if problem:
            self._log.spool_problem(problem)
        return False

    def next_batch(self) -> Batch | None:
        """The oldest spooled batch nobody else holds, or None (then the disk rests a while)."""
        lease = None
        with contained("reading a batch back from the spool"):
            lease = self._spool.claim()
        if lease is None:
            self._next_look = self._clock() + IDLE_RECHECK
            if self._replayed != (0, 0):
                # The backlog is drained: one line for all of it, never one per batch.
                self._log.replayed(*self._replayed)
                self._replayed = (0, 0)
            return None
        return Batch.from_spool(lease)

    @guarded("settling a spooled batch", default=None)
    def settle(self, batch: Batch, *, delivered: bool) -> None:
        """The spooled ``batch`` is done with (sent, refused or split into memory): delete it."""
        if delivered:
            # Counted before the file goes: whoever sees the spool empty sees the count.
            self._stats.record(Fate.RECOVERED, len(batch))
            self._replayed = (self._replayed[0] + len(batch), self._replayed[1] + 1)
        lease: Any = batch.spooled
        batch.spooled = None
        lease.ack()

    @guarded("giving back a spooled batch", default=None)
    def give_back(self, batch: Batch) -> None:
        """Not delivered this time: the batch waits on disk, in its place in the order."""
        lease: Any = batch.spooled
        batch.spooled = None
        lease.release()

    @guarded("counting the spool", default=0)
    def pending(self) -> int:
        """Batches waiting on disk for this destination."""
        return self._spool.pending()


class NoSpool:
    """No spool configured: nothing goes to disk, nothing waits there."""

    configured = False

    def problem(self) -> str | None:
        """No spool, no problem of its own."""
        return None

    def ready(self) -> bool:
        """Never: there is no disk to try."""
        return False

    def keep(self, batch: Batch) -> bool:
        """Never kept: the caller counts the batch lost."""
        return False

    def has_backlog(self) -> bool:
        """Nothing waits on disk."""
        return False

    def seconds_to_next_look(self) -> float:
        """Never worth a look."""
        return math.inf

    def next_batch(self) -> Batch | None:
        """No batch: nothing was ever spooled."""
        return None

    def settle(self, batch: Batch, *, delivered: bool) -> None:
        """Nothing to settle: only spooled batches are settled here."""

    def give_back(self, batch: Batch) -> None:
        """Nothing to give back: only spooled batches are given back."""

    def pending(self) -> int:
        """No batch waits on disk."""
        return 0
