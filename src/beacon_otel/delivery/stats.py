"""What the exporter tells about itself: counters of every event's fate, and delivery errors."""

from __future__ import annotations

import collections
import enum
import threading
from typing import Any

from beacon_otel.delivery.outcome import FailureKind, Outcome


class DeliveryError(Exception):
    """A batch could not be delivered; given to ``on_error``."""

    def __init__(
        self, reason: str, events: int, outcome: Outcome | None = None, *, what: str | None = None
    ) -> None:
        """``what`` replaces the reason's usual words when the situation says more."""
        status = f" (HTTP {outcome.status})" if outcome and outcome.status else ""
        detail = f": {outcome.detail}" if outcome and outcome.detail else ""
        what = what or _REASON_TEXT.get(reason, reason)
        if outcome is not None and outcome.kind is FailureKind.ENDPOINT_GUARD:
            what = "not sent"  # refused here, before anything left: the ingest never saw them
        if detail.startswith(": HTTP "):
            status = ""  # the detail names the status already
        super().__init__(f"{events} Beacon events {what}{status}{detail}")
        self.reason = reason
        self.events = events
        self.status = outcome.status if outcome else None
        self.outcome = outcome
        """The attempt's outcome (its ``detail`` says why in words), when there was one."""


class Fate(enum.Enum):
    """What happened to events: each event is queued once, then sent, spooled or dropped.

    ``retried`` counts attempts that failed and will be repeated; ``recovered`` counts spooled
    events that were sent later (they were counted as ``spooled`` first). ``excluded`` counts
    requests that made no event because ``exclude_paths`` matched their path (never queued).
    """

    QUEUED = "queued"
    SENT = "sent"
    RETRIED = "retried"
    SPOOLED = "spooled"
    RECOVERED = "recovered"
    DROPPED = "dropped"
    EXCLUDED = "excluded"

    # Members are singletons: hash them by identity, in C. Enum's own __hash__ is Python code,
    # and the counters hash a fate twice for every event queued.
    __hash__ = object.__hash__


class DeliveryStats:
    """Counters of what happened to events, by fate and, for drops, by reason; readable any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[Fate] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self.queued_events = 0
        """Events queued, apart from the counter: an enum member hashes in Python (``Enum.__hash__``),
        twice per ``+=``, which cost every request about 1,500 instructions. The delivery worker
        adds each event it queues here itself, under its lock (it is the only writer), without a
        call per event; a snapshot taken meanwhile may miss the event being counted."""

    def record(self, fate: Fate, count: int = 1, *, reason: str | None = None) -> None:
        """Count ``count`` events that met ``fate``; a drop names its ``reason``."""
        if count <= 0:
            return
        with self._lock:
            self._counts[fate] += count
            if fate is Fate.DROPPED:
                self._dropped[reason or "unknown"] += count

    def after_fork(self) -> None:
        """A forked child counts its own events, under a lock the parent's threads never held.

        The parent's delivery thread may hold the lock at the moment of the fork; in the child that
        thread does not exist, so the inherited lock would never be released.
        """
        self._lock = threading.Lock()
        self._counts.clear()
        self._dropped.clear()
        self.queued_events = 0

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` events lost for ``reason``."""
        self.record(Fate.DROPPED, count, reason=reason)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, with ``dropped`` by reason and its total."""
        with self._lock:
            counts = {fate.value: self._counts[fate] for fate in Fate if fate is not Fate.DROPPED}
            counts[Fate.QUEUED.value] += self.queued_events
            dropped = dict(self._dropped)
        return {**counts, "dropped": dropped, "dropped_total": sum(dropped.values())}

    def loss_summary(self) -> str | None:
        """One line of what was sent and what was lost by reason; None when nothing was lost."""
        snapshot = self.snapshot()
        if not snapshot["dropped_total"]:
            return None
        reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(snapshot["dropped"].items()))
        return f"{snapshot['sent']} events sent, {snapshot['dropped_total']} dropped ({reasons})"


_REASON_TEXT = {
    "rejected": "refused by the ingest",
    "retrying": "not delivered yet; they will be retried",
    "buffer_full": "dropped: the memory buffer was full",
    "too_large": "refused by the ingest as too large even alone",
    "retries_exhausted": "not delivered after retries and not spooled",
    "shutdown": "not delivered before the shutdown deadline and not spooled",
}
