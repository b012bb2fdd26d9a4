"""What waits in memory: events not yet in a batch, and batches cut but not yet settled.

Bounded by the buffer size, both counted together. The worker calls it with its lock held, so
nothing here locks, waits or does I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from beacon_otel.contract.batch import Batch
from beacon_otel.contract.event import RequestEvent, event_json


class EventBuffer:
    """Events in arrival order, then the batches made from them; the head batch is the one sent."""

    def __init__(
        self,
        *,
        max_size: int,
        clock: Callable[[], float],
        lost: Callable[[str, int], None] = lambda reason, count: None,
    ) -> None:
        self._max_size = max_size
        self._clock = clock
        self._lost = lost
        self._events: collections.deque[RequestEvent] = collections.deque()
        self._batches: collections.deque[Batch] = collections.deque()  # made, not yet settled
        self._batch_events = 0
        self.oldest_at = 0.0
        """When the oldest event not yet in a batch arrived."""

    def __bool__(self) -> bool:
        return bool(self._events or self._batches)

    @property
    def events(self) -> int:
        """Events not yet in a batch."""
        return len(self._events)

    @property
    def batches(self) -> int:
        """Batches made and not yet settled (being sent, retried, or halves of a split)."""
        return len(self._batches)

    def unsent(self) -> int:
        """Events in memory, in batches or not: what the buffer size bounds."""
        return len(self._events) + self._batch_events

    def should_spill(self, limit: int, *, batch_size: int, failing: bool) -> bool:
        """Whether memory is full enough for batches to go to disk (``limit``: events per batch).

        Memory first: while the ingest answers, batches wait in memory until it is nearly full.
        Once a request has failed, every full batch goes to disk, so the whole buffer is
        headroom for a burst while the thread writes (measured: with memory keeping half the
        buffer, a 3,000-request burst into a 200-event buffer overflowed it in 1 run of 6).
        """
        if len(self._batches) > 1 and failing:
            return True  # batches the disk refused earlier, or halves of a split
        if len(self._events) < limit:
            return False
        high_water = batch_size if failing else self._max_size - limit
        return self.unsent() >= high_water

    def drop_oldest(self) -> bool:
        """Make room by dropping the oldest event; False when memory is all batches."""
        if not self._events:
            return False
        self._events.popleft()
        return True

    def add(self, event: RequestEvent) -> int:
        """Append one event unless the buffer is full; how many wait outside batches now (0: full,
        nothing added): one call on every request, where asking first whether it is full was two."""
        events = self._events
        if len(events) + self._batch_events >= self._max_size:
            return 0
        if not events:
            self.oldest_at = self._clock()
        events.append(event)
        return len(events)

    def cut(self, count: int, size: int) -> list[Batch]:
        """Take up to ``count`` events, oldest first, as batches of at most ``size`` (kept by the caller).

        Each event is written as JSON here, once. One that cannot take its wire form is counted
        lost (``unencodable``), alone: the events popped with it are all in the batches
        returned, which may be none.
        """
        texts = self.encode(self.pop(count))
        return [Batch.encoded(texts[i : i + size]) for i in range(0, len(texts), size)]

    def pop(self, count: int) -> list[RequestEvent]:
        """Take up to ``count`` events, oldest first, to be written as JSON by :meth:`encode`.

        What is popped is no longer counted in memory: the caller holds it until it is a batch.
        """
        popped = [self._events.popleft() for _ in range(min(count, len(self._events)))]
        if self._events:
            self.oldest_at = self._clock()  # close enough: the rest arrived after the cut
        return popped

    def encode(self, popped: list[RequestEvent]) -> list[str]:
        """Each event's JSON text; one that cannot take its wire form is counted lost, alone.

        Needs no lock: the delivery thread may write a large batch without holding up requests.
        """
        try:
            return [event_json(event) for event in popped]
        except Exception:
            return self._encodable(popped)

    def _encodable(self, popped: list[RequestEvent]) -> list[str]:
        texts = []
        for event in popped:
            try:
                texts.append(event_json(event))
            except Exception:
                self._lost("unencodable", 1)
        return texts

    def head(self, size: int) -> Batch | None:
        """The batch to send next: the oldest unsettled one, or a new one of up to ``size`` events."""
        while not self._batches:
            if not self._events:
                return None
            for batch in self.cut(size, size)[:1]:
                self.keep(batch)
        return self._batches[0]

    def settled(self, batch: Batch) -> None:
        """``batch``, sent from the head, needs nothing more."""
        if self._batches and self._batches[0] is batch:
            self._batches.popleft()
            self._batch_events -= len(batch)

    def keep(self, batch: Batch) -> None:
        """Keep ``batch`` behind the others (the disk refused it, or a cut waits to be sent)."""
        self._batches.append(batch)
        self._batch_events += len(batch)

    def requeue(self, batches: list[Batch]) -> None:
        """Put ``batches`` first, in order: the halves of a split hold the oldest events."""
        for batch in reversed(batches):
            self._batches.appendleft(batch)
            self._batch_events += len(batch)

    def take_newest(self) -> Batch:
        """Take the newest unsettled batch (for the disk); the head keeps probing the ingest."""
        batch = self._batches.pop()
        self._batch_events -= len(batch)
        return batch

    def batch_everything(self, size: int) -> None:
        """Cut every waiting event into batches, when no batch is left (the final drain)."""
        if not self._batches:
            for batch in self.cut(len(self._events), size):
                self.keep(batch)

    def take_all(self, size: int) -> list[Batch]:
        """Empty memory: every unsettled batch, then the rest cut into batches of ``size``."""
        batches = list(self._batches)
        self._batches.clear()
        self._batch_events = 0
        return batches + self.cut(len(self._events), size)
