"""What a user reads about delivery: where events go, when it fails and why, when it recovers.

Quiet when all is well (one INFO line at start), one WARNING in words when delivery starts
failing, then at most one line a minute per kind of failure, and one INFO line on recovery. With
``debug`` every attempt is printed too, on stderr, whatever the app's logging setup.

INFO lines would be invisible in an app that never configured logging (Python prints only
warnings then), so until the app configures the root logger Beacon prints its own lines on stderr;
once it does, they go its way and are not printed twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from beacon_otel.delivery.outcome import Outcome, Verdict

logger = logging.getLogger("beacon_otel")

REPEAT_INTERVAL = 60.0
"""Seconds between two log lines about the same kind of failure."""
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _UntilTheAppLogs(logging.Filter):
    """Pass records only while the root logger has no handler of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


def make_visible(*, debug: bool) -> None:
    """Make Beacon's lines reach stderr: INFO until the app configures logging, DEBUG if asked."""
    for handler in logger.handlers:
        if getattr(handler, "_beacon_otel", False):
            if debug:
                handler.setLevel(logging.DEBUG)
                handler.filters.clear()
                logger.setLevel(logging.DEBUG)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._beacon_otel = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(_FORMAT))
    if debug:
        # Asked for: every attempt, whatever the app's logging setup. Not passed up as well,
        # or an app logging to stderr would print each line twice.
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    else:
        handler.addFilter(_UntilTheAppLogs())
        if logger.level == logging.NOTSET:  # a level the app chose stays
            logger.setLevel(logging.INFO)
    logger.addHandler(handler)


class DeliveryLog:
    """The log lines of one processor's delivery, rate-limited per kind of failure."""

    def __init__(
        self, *, url: str, host: str, spool_path: str | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self.host = host
        self.spool_path = spool_path
        self._clock = clock
        self._last: dict[str, float] = {}
        self._told_spooling = False

    def started(self) -> None:
        """The one line at start: where events go, and where they wait when they cannot."""
        where = f"spool at {self.spool_path}" if self.spool_path else "no disk spool"
        logger.info("beacon-otel: sending to %s, %s", self.url, where)

    def attempt(self, outcome: Outcome, events: int, batch_id: str, elapsed: float, replay: bool) -> None:
        """Every attempt, at DEBUG."""
        if not logger.isEnabledFor(logging.DEBUG):
            return
        what = "spooled batch" if replay else "batch"
        if outcome.verdict is Verdict.ACCEPTED:
            result = f"accepted (HTTP {outcome.status})"
        else:
            result = f"{outcome.verdict.value}: {outcome.detail or outcome.status}"
        logger.debug(
            "beacon-otel: POST %s, %s %s of %d events: %s in %.0f ms",
            self.url,
            what,
            batch_id[:8],
            events,
            result,
            elapsed * 1000,
        )

    def failing(self, outcome: Outcome, *, first: bool, next_step: str) -> None:
        """A transient failure: a WARNING the first time, then one a minute per kind."""
        kind = outcome.kind.value if outcome.kind else "failure"
        if not first and not self._due(f"failing:{kind}"):
            return
        self._last[f"failing:{kind}"] = self._clock()
        start = "cannot deliver" if first else "still cannot deliver"
        reason = outcome.detail or (f"HTTP {outcome.status}" if outcome.status else "no answer")
        logger.warning("beacon-otel: %s to %s: %s; %s", start, self.host, reason, next_step)

    def spooling(self) -> None:
        """Batches began to go to disk during this outage: said once, until delivery recovers."""
        if not self._told_spooling:
            self._told_spooling = True
            logger.warning(
                "beacon-otel: %s is still failing; events now wait on disk at %s", self.host, self.spool_path
            )

    def recovered(self, seconds: float, delayed: int) -> None:
        """Delivery works again after a failure."""
        self._told_spooling = False
        self._last = {key: value for key, value in self._last.items() if not key.startswith("failing:")}
        logger.info(
            "beacon-otel: delivery to %s recovered after %.1f s; %d events were delayed",
            self.host,
            seconds,
            delayed,
        )

    def replayed(self, events: int, batches: int) -> None:
        """Spooled batches (of an earlier run, or of this one's outage) were sent: once per backlog."""
        logger.info(
            "beacon-otel: sent %d events (%d batches) that waited in the spool at %s",
            events,
            batches,
            self.spool_path,
        )

    def lost(self, message: str, *, kind: str) -> None:
        """Events that will never arrive (refused, or no room left): one line a minute per kind."""
        if self._due(f"lost:{kind}"):
            self._last[f"lost:{kind}"] = self._clock()
            logger.warning("beacon-otel: %s", message)

    def spool_problem(self, problem: str) -> None:
        """The spool could not take a batch (full, or a disk error): once a minute."""
        if self._due("spool"):
            self._last["spool"] = self._clock()
            logger.warning("beacon-otel: %s; events wait in memory meanwhile", problem)

    def _due(self, key: str) -> bool:
        last = self._last.get(key)
        return last is None or self._clock() - last >= REPEAT_INTERVAL
