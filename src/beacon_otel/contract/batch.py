"""A batch: the events of one request to the ingest, with the id that makes resends harmless."""

from __future__ import annotations

import json
import uuid
from typing import Any

from beacon_otel.contract.event import encode_events, join_events


def new_batch_id() -> str:
    """A fresh Idempotency-Key: 32 hex characters, unique per batch."""
    return uuid.uuid4().hex


class Batch:
    """Events, their encoded body (made once) and the batch's Idempotency-Key.

    The id stays the same on every retry and in the spool, so an ingest that sees it twice
    stores the batch once; each half of a split is a new batch with a new id.

    A batch cut from memory holds each event's JSON text (:meth:`encoded`): the delivery thread
    writes every event once, straight from its tuple, and the body is those texts joined. One
    made from wire dicts (a test, the spool's tools) or read back from the spool holds dicts.
    """

    __slots__ = ("_body", "_count", "_events", "_texts", "attempts", "batch_id", "spooled")

    def __init__(
        self,
        events: list[dict[str, Any]],
        *,
        batch_id: str | None = None,
        body: bytes | None = None,
        spooled: Any = None,
    ) -> None:
        self._events: list[dict[str, Any]] | None = events
        self._texts: list[str] | None = None
        self._count = len(events)
        self.batch_id = batch_id or new_batch_id()
        self.attempts = 0
        self._body = body
        self.spooled = spooled
        """The spool's lease when this batch was read back from disk: acked once settled."""

    @classmethod
    def encoded(cls, texts: list[str]) -> Batch:
        """A new batch of events already written as JSON text, one each (``event_json``)."""
        batch = cls([])
        batch._events, batch._texts, batch._count = None, texts, len(texts)
        return batch

    @classmethod
    def from_spool(cls, spooled: Any) -> Batch:
        """A batch read back from the spool: its body and id exactly as first sent."""
        batch = cls(_events_of(spooled.body), batch_id=spooled.batch_id, body=spooled.body, spooled=spooled)
        batch._count = spooled.events  # what the spool recorded, even for a body it cannot split
        return batch

    def __len__(self) -> int:
        return self._count

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events in their wire form (decoded from their JSON text for a batch cut from memory)."""
        if self._events is None:
            self._events = [json.loads(text) for text in self._texts or ()]
        return self._events

    def divisible(self) -> int:
        """How many events a split can share out: none for a spooled body that cannot be read."""
        return len(self._texts) if self._texts is not None else len(self._events or ())

    def body(self) -> bytes:
        """The request body, encoded once: retries and the spool send the same bytes."""
        if self._body is None:
            if self._texts is not None:
                self._body = join_events(self._texts)
            else:
                self._body = encode_events(self.events)
        return self._body

    def split(self, size: int) -> list[Batch]:
        """This batch's events in new batches of at most ``size`` events, each with its own id."""
        size = max(1, size)
        if self._texts is not None:
            texts = self._texts
            return [Batch.encoded(texts[i : i + size]) for i in range(0, len(texts), size)]
        events = self.events
        return [Batch(events[i : i + size]) for i in range(0, len(events), size)]


def _events_of(body: bytes) -> list[dict[str, Any]]:
    try:
        events = json.loads(body)["events"]
    except (ValueError, KeyError, TypeError):
        return []  # unreadable: can still be sent whole, just not split
    return events if isinstance(events, list) else []
