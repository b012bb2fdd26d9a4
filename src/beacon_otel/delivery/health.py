"""How well the ingest is doing, and so when the next request may go.

The delivery thread asks one object: may I send now (``ready``), is the ingest down (``down``:
full batches then go to the spool rather than waiting in memory), is it hung (``hung``: a
shutdown spools at once instead of waiting on a request that will not come back). Each answer
is written once here, and the clock and the randomness are injected so tables can test them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from beacon_otel.delivery.outcome import FailureKind, Outcome

BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
DOWN_AFTER = 2
"""Consecutive failures after which the ingest counts as down: one failure may be a blip."""
GIVE_UP_AFTER = 6
"""Attempts at one batch before it goes to the spool (about a minute of backoff in all)."""


def backoff_delay(
    failures: int,
    *,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with full jitter after ``failures`` consecutive failures (>= 1)."""
    return float(rand() * min(cap, base * (2 ** min(max(failures - 1, 0), 32))))


class IngestHealth:
    """Consecutive failures, the backoff they impose and the time the trouble started."""

    __slots__ = ("_clock", "_rand", "failing_since", "failures", "last_failure", "retry_at")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._rand = rand
        self.failures = 0
        self.retry_at = 0.0
        self.failing_since: float | None = None
        self.last_failure: Outcome | None = None

    def ready(self) -> bool:
        """Whether a request may go now (no backoff or Retry-After pending)."""
        return self._clock() >= self.retry_at

    def seconds_to_wait(self) -> float:
        """Seconds until a request may go; 0 when it may go now."""
        return max(0.0, self.retry_at - self._clock())

    @property
    def failing(self) -> bool:
        """The last request failed (transiently)."""
        return self.failures > 0

    @property
    def down(self) -> bool:
        """Failed often enough in a row that what cannot go soon belongs on disk."""
        return self.failures >= DOWN_AFTER

    @property
    def hung(self) -> bool:
        """The last request timed out: one more would most likely hang too."""
        last = self.last_failure
        return self.failing and last is not None and last.kind is FailureKind.TIMEOUT

    def succeeded(self) -> float | None:
        """Record a success; returns how long the ingest had been failing, if it had."""
        since = self.failing_since
        self.failures = 0
        self.retry_at = 0.0
        self.failing_since = None
        self.last_failure = None
        return None if since is None else self._clock() - since

    def failed(self, outcome: Outcome) -> float:
        """Record a transient failure; returns the delay before the next request."""
        now = self._clock()
        if self.failing_since is None:
            self.failing_since = now
        self.failures += 1
        self.last_failure = outcome
        delay = backoff_delay(self.failures, rand=self._rand)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        self.retry_at = now + delay
        return delay
