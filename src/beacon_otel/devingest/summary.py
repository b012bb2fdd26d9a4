"""What the stored events add up to: per-route figures, errors, validation fields, charts' data.

One pass over the rows serves `GET /v1/summary`, `beacon-otel summary` and the dashboard, so
the three always agree. Filters (consumer, status class) apply before anything is counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from beacon_otel.devingest.validation import parse_ts

# The columns summarise() reads, in this order.
COLUMNS = "ts, method, route, path, status, duration_ms, consumer, error, validation_errors"
LATEST_ERRORS = 10
# Upper bounds (ms) of the latency histogram's buckets; the last one is open.
LATENCY_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True)
class Filters:
    """Which events count: one consumer ("-" for none) and/or one status class ("4xx")."""

    consumer: str | None = None
    status: str | None = None

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> Filters:
        """From a parsed query string; unknown status classes are refused."""
        consumer = (query.get("consumer") or [""])[0] or None
        status = (query.get("status") or [""])[0] or None
        if status is not None and status not in _STATUS_CLASSES:
            raise ValueError(f"status must be one of {', '.join(_STATUS_CLASSES)}, got {status!r}")
        return cls(consumer, status)

    def keep(self, row: tuple[Any, ...]) -> bool:
        consumer, status = row[6], row[4]
        if self.consumer is not None and (consumer or "-") != self.consumer:
            return False
        return self.status is None or f"{status // 100}xx" == self.status


def is_error(status: int, error: str | None) -> bool:
    """A failed request: an exception, or a 5xx (the contract's `error` or a server status)."""
    return error is not None or status >= 500


def _percentile(sorted_values: list[int], pct: int) -> int | None:
    """Nearest-rank percentile: the smallest value with at least pct% of values at or below."""
    if not sorted_values:
        return None
    rank = -(-pct * len(sorted_values) // 100)  # ceil in integers: no float rounding surprises
    return sorted_values[max(rank, 1) - 1]


def _aggregate(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Request, error, status and latency figures for a group of rows."""
    errors = sum(1 for row in rows if is_error(row[4], row[7]))
    durations = sorted(row[5] for row in rows)
    statuses = Counter(str(row[4]) for row in rows)
    return {
        "requests": len(rows),
        "errors": errors,
        "error_rate": round(errors / len(rows), 4) if rows else 0.0,
        "client_errors": sum(1 for row in rows if 400 <= row[4] < 500),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": _percentile(durations, 50),
        "p95_ms": _percentile(durations, 95),
        "p99_ms": _percentile(durations, 99),
    }


def _top(counter: Counter[str], n: int) -> list[dict[str, Any]]:
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return [{"consumer": name, "count": count} for name, count in ranked[:n]]


def summarise(all_rows: Iterable[tuple[Any, ...]], filters: Filters | None = None) -> dict[str, Any]:
    """Everything the summary and the dashboard show, from rows of `COLUMNS`, oldest first."""
    every, filters = list(all_rows), filters or Filters()
    rows = [row for row in every if filters.keep(row)]
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault((row[1], row[2]), []).append(row)
    routes = []
    for (method, route), group in groups.items():
        consumers = Counter(row[6] or "-" for row in group)
        routes.append(
            {"method": method, "route": route, **_aggregate(group), "top_consumers": _top(consumers, 3)}
        )
    routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
    return {
        "routes": routes,
        "totals": {**_aggregate(rows), "routes": len(routes)},
        "filters": {"consumer": filters.consumer, "status": filters.status},
        # Every consumer, unfiltered: the dashboard's filter offers them all.
        "consumers": _top(Counter(row[6] or "-" for row in every), 50),
        "latest_errors": _latest_errors(rows),
        "validation_fields": _validation_fields(rows),
        "latency_histogram": _histogram(row[5] for row in rows),
        "traffic": _traffic(rows),
    }


def _latest_errors(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    keys = ("ts", "method", "route", "path", "status", "duration_ms", "consumer", "error")
    failed = [row for row in rows if is_error(row[4], row[7])][-LATEST_ERRORS:]
    return [dict(zip(keys, row[:8], strict=True)) for row in reversed(failed)]


def _validation_fields(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Per field of a 422's validation errors: how often, and the latest message and route."""
    counts: Counter[str] = Counter()
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        for item in json.loads(row[8]) if row[8] else []:
            counts[item["field"]] += 1
            latest[item["field"]] = {"message": item["message"], "route": row[2], "method": row[1]}
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"field": field, "count": n, **latest[field]} for field, n in ranked]


def _histogram(durations: Iterable[int]) -> list[dict[str, Any]]:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for duration in durations:
        counts[next((i for i, le in enumerate(LATENCY_BUCKETS) if duration <= le), len(LATENCY_BUCKETS))] += 1
    return [{"le_ms": le, "count": n} for le, n in zip([*LATENCY_BUCKETS, None], counts, strict=True)]


def _traffic(rows: list[tuple[Any, ...]], max_points: int = 60) -> list[dict[str, Any]]:
    """Requests and errors per time step (a second up to an hour, so at most max_points steps)."""
    if not rows:
        return []
    times = [parse_ts(row[0]).timestamp() for row in rows]
    start, end = min(times), max(times)
    step = next((s for s in (1, 5, 10, 30, 60, 300, 600, 3600) if (end - start) / s < max_points), 86400)
    first = int(start // step) * step
    points: dict[int, list[int]] = {}
    for at, row in zip(times, rows, strict=True):
        point = points.setdefault(int((at - first) // step), [0, 0])
        point[0] += 1
        point[1] += is_error(row[4], row[7])
    steps = [points.get(i, [0, 0]) for i in range(max(points) + 1)]
    return [
        {"start": first + i * step, "step_s": step, "requests": n, "errors": errors}
        for i, (n, errors) in enumerate(steps)
    ]
