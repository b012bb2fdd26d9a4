"""One attempt at a batch and what follows from its outcome: count, log, retry, split, spool.

The worker decides when to send; this decides what an answer means, with the ingest's health
(:mod:`beacon_otel.delivery.health`), the spool (:mod:`beacon_otel.delivery.spooling`), the
counters and the log lines. It runs on the delivery thread only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from beacon_otel.common import guard
from beacon_otel.contract.batch import Batch
from beacon_otel.delivery.health import GIVE_UP_AFTER, IngestHealth
from beacon_otel.delivery.log import DeliveryLog
from beacon_otel.delivery.outcome import FailureKind, Outcome, Verdict
from beacon_otel.delivery.spooling import NoSpool, SpoolPolicy
from beacon_otel.delivery.stats import DeliveryError, DeliveryStats, Fate
from beacon_otel.delivery.transports.base import Transport

BODY_LIMIT_PROBE = 600.0
"""Seconds after the last 413 when the body limit is forgotten altogether."""
FIRST_PROBE_AFTER = 1
"""Batches accepted under a learnt limit before a body twice as large is allowed."""
MAX_PROBE_AFTER = 1024


class BodySizeLimit:
    """The largest request body the ingest takes, learnt from its 413s and probed back up.

    In bytes, not events: after a 413 on a batch of two large events, batches of a hundred small
    ones still go whole. A 413 may be a one-off, or a limit the ingest has since raised: after a
    few accepted batches the limit doubles, and each time a probe above a limit is refused again
    the probes come half as often (so a real limit costs a handful of 413s, not one per batch).
    ``BODY_LIMIT_PROBE`` seconds after the last 413 it is forgotten.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._refused = math.inf  # the smallest body refused, or raised by probing since
        self._confirmed = math.inf  # the size a 413 last confirmed: a refusal at or above it was a probe
        self._probe_after = FIRST_PROBE_AFTER
        self._accepted = 0
        self._refused_at = 0.0

    def limit(self) -> float:
        """Bytes a body may have now; infinite when no 413 was seen (or long ago)."""
        if self._refused != math.inf and self._clock() - self._refused_at >= BODY_LIMIT_PROBE:
            self.__init__(self._clock)  # type: ignore[misc]  # forget everything
        return self._refused - 1

    def refused(self, size: int) -> None:
        """The ingest answered 413 to a body of ``size`` bytes."""
        if size >= self._confirmed:
            self._probe_after = min(self._probe_after * 2, MAX_PROBE_AFTER)  # a probe that failed
        self._refused = self._confirmed = min(self._refused, size)
        self._accepted = 0
        self._refused_at = self._clock()

    def accepted(self) -> None:
        """A batch went through: after enough of them, allow bodies twice as large."""
        if self._refused == math.inf:
            return
        self._accepted += 1
        if self._accepted >= self._probe_after:
            self._refused *= 2
            self._accepted = 0


class Delivery:
    """Sends batches through a transport and settles each according to the contract."""

    def __init__(
        self,
        transport: Transport,
        *,
        stats: DeliveryStats,
        report: Callable[[DeliveryError], None],
        log: DeliveryLog,
        spool: SpoolPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self.stats = stats
        """The counters; the worker counts each event it queues there itself."""
        self._report = report
        self._log = log
        self.spool: SpoolPolicy | NoSpool = spool if spool is not None else NoSpool()
        """Where batches that cannot go now wait (:class:`NoSpool` when nowhere)."""
        self._clock = clock
        self.health = IngestHealth(clock=clock)
        self._size = BodySizeLimit(clock)  # learnt from 413s: the largest body the ingest takes
        self._delayed_from = 0
        """While the ingest fails: the count of events queued, less the first failed batch's.
        What the count has grown by since is how many events the failure delayed."""

    def reset(self) -> None:
        """A forked child starts healthy, with its own connections and counters."""
        self.stats.after_fork()
        self.health = IngestHealth(clock=self._clock)
        self._delayed_from = 0
        self._transport.reset()

    def close(self) -> None:
        """Close the transport's connections."""
        with guard.contained("closing the transport"):
            self._transport.close()

    # -- counting (called under the worker's lock: no I/O here) ------------------------------

    def lost(self, reason: str, count: int, outcome: Outcome | None = None) -> None:
        """``count`` events will never arrive: counted, reported, logged once a minute."""
        self.stats.drop(reason, count)
        error = DeliveryError(
            reason, count, outcome, what=self._buffer_full() if reason == "buffer_full" else None
        )
        self._report(error)
        self._log.lost(str(error), kind=reason)

    def _buffer_full(self) -> str:
        """Why memory had no room, in words that match the spool's state."""
        if not self.spool.configured:
            return "dropped: the memory buffer is full and no spool is configured"
        problem = self.spool.problem()
        if problem:
            return f"dropped: the memory buffer is full and the spool cannot take batches ({problem})"
        # The spool takes batches: a burst filled memory before the delivery thread wrote them.
        return (
            "dropped: the memory buffer filled before its batches could be written to the spool "
            "(a larger BEACON_MAX_BUFFER_SIZE holds a longer burst)"
        )

    # -- sizes and the spool -------------------------------------------------------------------

    def batch_limit(self, batch_size: int) -> int:
        """Events per batch: the configured size (a 413 limits bytes, checked as each batch goes)."""
        return batch_size

    def body_limit(self) -> float:
        """The largest body to send now, in bytes (``BodySizeLimit``); infinite until a 413."""
        return self._size.limit()

    def keep(self, batch: Batch) -> bool:
        """Put ``batch`` on disk; False when there is no spool or it cannot take the batch now."""
        if not self.spool.keep(batch):
            return False
        if self.health.failing:
            self._log.spooling()
        return True

    def keep_or_lose(self, batch: Batch, *, reason: str, outcome: Outcome | None = None) -> None:
        """Spool a batch that cannot go now; without room on disk it is lost, counted, reported."""
        if not self.spool.keep(batch):
            self.lost(reason, len(batch), outcome)

    # -- one attempt -------------------------------------------------------------------------

    def attempt(self, batch: Batch, *, stopping: bool) -> tuple[bool, list[Batch]]:
        """Send ``batch`` once; returns whether it is settled and the batches that replace it."""
        limit = self.body_limit()
        if limit != math.inf and batch.divisible() > 1 and len(batch.body()) > limit:
            # Larger than the ingest took before (a spooled batch, or the rest of a split).
            self._settle_spooled(batch)
            return True, _split_under(batch, limit)
        started = self._clock()
        outcome = self._send(batch)
        batch.attempts += 1
        replay = batch.spooled is not None
        self._log.attempt(outcome, len(batch), batch.batch_id, self._clock() - started, replay)
        verdict = outcome.verdict
        if verdict is Verdict.ACCEPTED:
            self._size.accepted()
            self._accepted(batch)
            return True, []
        if verdict is Verdict.SPLIT and batch.divisible() > 1:
            # Learn the limit rather than halving from the full size for every batch.
            self._size.refused(len(batch.body()))
            self._settle_spooled(batch)
            return True, _split_under(batch, self._size.limit())
        if verdict is Verdict.RETRY:
            return self._failed(batch, outcome, stopping=stopping), []
        reason = "too_large" if verdict is Verdict.SPLIT else "rejected"
        self._settle_spooled(batch)
        self.lost(reason, len(batch), outcome)
        return True, []

    def _send(self, batch: Batch) -> Outcome:
        try:
            return self._transport.send(batch.body(), batch.batch_id)
        except Exception as exc:  # a transport must not kill the delivery thread
            if guard.raise_internal_errors():
                raise
            guard.log_internal_error("sending a batch")
            return Outcome(
                Verdict.RETRY, detail=f"internal error: {type(exc).__name__}", kind=FailureKind.INTERNAL
            )

    def _accepted(self, batch: Batch) -> None:
        if batch.spooled is not None:
            self.spool.settle(batch, delivered=True)
        else:
            self.stats.record(Fate.SENT, len(batch))
        failing_for = self.health.succeeded()
        if failing_for is not None:
            self._log.recovered(failing_for, self.stats.queued_events - self._delayed_from)

    def _failed(self, batch: Batch, outcome: Outcome, *, stopping: bool) -> bool:
        """A transient failure: back off, tell, and keep the batch in memory or on disk."""
        first = not self.health.failing
        delay = self.health.failed(outcome)
        self.stats.record(Fate.RETRIED, len(batch))
        self._report(DeliveryError("retrying", len(batch), outcome))
        if first:
            self._delayed_from = self.stats.queued_events - len(batch)
        gives_up = batch.attempts >= GIVE_UP_AFTER or self.health.down
        if self.spool.configured and (gives_up or stopping):
            next_step = f"spooling to {self._log.spool_path}"
        else:
            next_step = f"retrying in {delay:.1f} s; events wait in memory"
        self._log.failing(outcome, first=first, next_step=next_step)
        if stopping or batch.spooled is not None:
            return False  # shutdown spools what is left; a spooled batch goes back to disk
        if batch.attempts >= GIVE_UP_AFTER:
            if self.spool.configured:
                return self.keep(batch)
            self.lost("retries_exhausted", len(batch), outcome)
            return True
        return False

    def _settle_spooled(self, batch: Batch) -> None:
        if batch.spooled is not None:
            self.spool.settle(batch, delivered=False)


def _split_under(batch: Batch, limit: float) -> list[Batch]:
    """``batch`` in as many equal parts as its size asks for under ``limit`` bytes (two at least).

    Events differ in size, so a part may still be over the limit: it is split again when it is
    next up, without a request.
    """
    parts = max(2, math.ceil(len(batch.body()) / max(limit, 1)))
    return batch.split(math.ceil(batch.divisible() / parts))
