"""What the exporter tells about itself: counters of every event's fate, and delivery errors."""

from __future__ import annotations

import collections
import threading
from typing import Any

from beacon_otel.transport import FailureKind, Outcome


class DeliveryError(Exception):
    """A batch could not be delivered; given to ``on_error``."""

    def __init__(self, reason: str, events: int, outcome: Outcome | None = None) -> None:
        status = f" (HTTP {outcome.status})" if outcome and outcome.status else ""
        detail = f": {outcome.detail}" if outcome and outcome.detail else ""
        what = _REASON_TEXT.get(reason, reason)
        if outcome is not None and outcome.kind is FailureKind.ENDPOINT_GUARD:
            what = "not sent"  # refused here, before anything left: the ingest never saw them
        if detail.startswith(": HTTP "):
            status = ""  # the detail names the status already
        super().__init__(f"{events} Beacon events {what}{status}{detail}")
        self.reason = reason
        self.events = events
        self.status = outcome.status if outcome else None


class DeliveryStats:
    """Counters of what happened to events, readable at any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queued = 0
        self.sent = 0
        self.retried = 0
        self.spooled = 0
        self.recovered = 0
        self.buffer_full = 0
        self.dropped: collections.Counter[str] = collections.Counter()

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` events lost for ``reason``."""
        with self._lock:
            self.dropped[reason] += count

    def add(self, name: str, count: int = 1) -> None:
        """Increase a plain counter."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, with ``dropped`` by reason and its total."""
        with self._lock:
            dropped = dict(self.dropped)
            if self.buffer_full:
                dropped["buffer_full"] = self.buffer_full
            return {
                "queued": self.queued,
                "sent": self.sent,
                "retried": self.retried,
                "spooled": self.spooled,
                "recovered": self.recovered,
                "dropped": dropped,
                "dropped_total": sum(dropped.values()),
            }


_REASON_TEXT = {
    "rejected": "refused by the ingest",
    "retries_exhausted": "not delivered after retries and not spooled",
    "shutdown": "not delivered before the shutdown deadline and not spooled",
}
