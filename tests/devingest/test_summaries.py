"""The running summaries: each poll reads only the events stored since the last, and adds up to
what a summary of every event at once says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from beacon_otel.devingest import DevIngest, Filters
from beacon_otel.devingest import summaries as summaries_module
from beacon_otel.devingest.store import EventStore
from beacon_otel.devingest.summary import _epoch
from beacon_otel.devingest.validation import parse_ts

AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}


def event(i: int) -> dict[str, Any]:
    """The i-th of a varied, repeatable stream: routes, statuses, consumers, errors, 422 fields, times."""
    status = (200, 200, 201, 404, 422, 500, 200, 302)[i % 8]
    found: dict[str, Any] = {
        "ts": f"2026-06-03T12:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}+0{i % 3}:00",
        "method": ("GET", "POST")[i % 2],
        "route": f"/r{i % 5}/{{id}}",
        "path": f"/r{i % 5}/{i}",
        "status": status,
        "duration_ms": (i * 37) % 1200,
        "consumer": (None, "acme", "globex", "-", "initech")[i % 5 if i % 7 else 0],
        "error": "ValueError: boom" if i % 11 == 0 else None,
    }
    if status == 422:
        found["validation_errors"] = [{"field": f"body.f{i % 4}", "message": f"bad {i}"}]
    return found


def send(ingest: DevIngest, events: list[dict[str, Any]]) -> None:
    body = json.dumps({"events": events})
    assert requests.post(ingest.url, data=body, headers=AUTH, timeout=30).status_code == 202


@pytest.fixture
def rows_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many rows each read of the store for a summary returned."""
    read: list[int] = []
    original = EventStore.rows_after

    def counted(self: EventStore, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        rows = original(self, *args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(EventStore, "rows_after", counted)
    yield read


FILTERS = [
    Filters(),
    Filters(consumer="acme"),
    Filters(consumer="-"),
    Filters(status="4xx"),
    Filters("globex", "2xx"),
]


def test_a_poll_reads_only_what_was_stored_since_the_last(rows_read: list[int]) -> None:
    """The first summary reads every stored event once; later ones, with several dashboards
    polling, read only the new events, however many are stored."""
    with DevIngest() as ingest:
        send(ingest, [event(i) for i in range(3_000)])
        ingest.summary()
        assert sum(rows_read) == 3_000
        rows_read.clear()
        for _ in range(3):  # three dashboards polling, nothing new
            ingest.summary()
        assert sum(rows_read) == 0
        send(ingest, [event(i) for i in range(3_000, 3_010)])
        for _ in range(3):
            ingest.summary()
        assert sum(rows_read) == 10


def test_running_summaries_equal_a_summary_of_everything_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filtered and unfiltered summaries polled between batches, read in small chunks, end equal to
    those of a fresh ingest given every event in one batch."""
    monkeypatch.setattr(summaries_module, "CHUNK", 7)
    stream = [event(i) for i in range(400)]
    with DevIngest() as polled, DevIngest() as fresh:
        for start in range(0, 400, 50):
            send(polled, stream[start : start + 50])
            for filters in FILTERS:
                polled.summary(filters)
        send(fresh, stream)
        for filters in FILTERS:
            assert polled.summary(filters) == fresh.summary(filters), filters
        everything = fresh.summary()
        assert everything["totals"]["requests"] == 400
        assert everything["traffic"] and everything["validation_fields"] and everything["latest_errors"]


def test_a_reset_or_a_new_store_starts_the_summary_again() -> None:
    """After POST /v1/_reset, or a restart on a new in-memory store, the summary counts only what follows."""
    with DevIngest() as ingest:
        send(ingest, [event(i) for i in range(20)])
        assert ingest.summary(Filters(consumer="acme"))["totals"]["requests"] > 0
        assert ingest.summary()["totals"]["requests"] == 20
        assert requests.post(ingest.base_url + "/v1/_reset", json={}, timeout=10).ok
        assert ingest.summary()["totals"]["requests"] == 0
        assert ingest.summary(Filters(consumer="acme"))["totals"]["requests"] == 0
        send(ingest, [event(1)])
        assert ingest.summary()["totals"]["requests"] == 1
    ingest.start()  # a new in-memory store, whose ids start again from 1
    try:
        send(ingest, [event(2), event(3)])
        assert ingest.summary()["totals"]["requests"] == 2
    finally:
        ingest.stop()


def test_more_filters_than_are_kept_still_add_up() -> None:
    """Past the tallies kept, a filter asked for again is added up again from the store."""
    with DevIngest() as ingest:
        send(ingest, [event(i) for i in range(100)])
        consumers = [f"c{i}" for i in range(summaries_module.KEPT_FILTERS + 4)]
        send(ingest, [{**event(0), "consumer": c} for c in consumers])
        for c in consumers * 2:
            assert ingest.summary(Filters(consumer=c))["totals"]["requests"] == 1
        assert ingest.summary()["totals"]["requests"] == 100 + len(consumers)


@pytest.mark.parametrize(
    "ts",
    [
        "2026-06-03T12:00:00.042+00:00",
        "2026-06-03T12:00:00Z",
        "2026-06-03T12:00Z",
        "2026-06-03T12:00:00.123456789-05:30",
        "2026-06-03T12:00:00.5+01:00",
        "1969-12-31T23:59:59.999+00:00",
    ],
)
def test_event_times_are_read_as_the_contract_parses_them(ts: str) -> None:
    """The traffic chart's clock, parsed once per whole second, is exactly what parse_ts gives."""
    assert _epoch(ts) == parse_ts(ts).timestamp()
