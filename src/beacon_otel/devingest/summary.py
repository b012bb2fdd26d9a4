"""What the stored events add up to: per-route figures, errors, validation fields, charts' data.

A Tally serves `GET /v1/summary`, `beacon-otel summary` and the dashboard, so the three always
agree. It adds up rows as they come and remembers the last one it saw: each poll reads only the
events stored since the previous one (``beacon_otel.devingest.summaries`` keeps the tallies), so
a million stored events and several open dashboards cost what the new events cost. Filters
(consumer, status class) apply before anything is counted.

What the dashboard's views need is kept the same way, never by reading stored rows again: per
consumer figures, each route's last requests and errors (a short ring each), errors grouped by
route and text, requests per second. Rendering a poll walks these groups (routes, consumers,
distinct error texts, seconds with traffic), whose number does not grow with the rows stored.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import json
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from beacon_otel.devingest.validation import parse_ts

# The columns Tally.add() reads, in this order.
COLUMNS = "ts, method, route, path, status, duration_ms, consumer, error, validation_errors"
LATEST_ERRORS = 10
RECENT_PER_ROUTE = 20  # a route's drill-down: its last requests, and as many of its last errors
SHOWN_GROUPS = 50  # consumers and error groups in one summary, the most recent first
RANGES = {"5m": 300, "1h": 3600, "all": None}  # the traffic chart's time ranges, in seconds
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

    @property
    def status_class(self) -> int | None:
        """The status filter as the hundreds digit (4 for "4xx"), None for all."""
        return None if self.status is None else int(self.status[0])


@dataclass(frozen=True)
class View:
    """What one summary shows besides the figures: a route's drill-down, the traffic chart's range."""

    route: tuple[str, str] | None = None  # (method, route template)
    range: str = "all"

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> View:
        """From ``?route=GET /users/{user_id}`` and ``?range=5m|1h|all``; other ranges are refused."""
        chosen = (query.get("range") or ["all"])[0]
        if chosen not in RANGES:
            raise ValueError(f"range must be one of {', '.join(RANGES)}, got {chosen!r}")
        method, _, template = (query.get("route") or [""])[0].partition(" ")
        return cls((method, template) if template else None, chosen)


def is_error(status: int, error: str | None) -> bool:
    """A failed request: an exception, or a 5xx (the contract's `error` or a server status)."""
    return error is not None or status >= 500


def _percentile(durations: Iterable[int], pct: int) -> int | None:
    """Nearest-rank percentile: the smallest value with at least pct% of values at or below.

    ``durations`` may be a Counter of them (value -> how many), as Figures keeps them.
    """
    counts: Counter[int] = durations if isinstance(durations, Counter) else Counter(durations)
    rank = -(-pct * counts.total() // 100)  # ceil in integers: no float rounding surprises
    below = 0
    for value in sorted(counts):
        below += counts[value]
        if below >= max(rank, 1):
            return value
    return None


@dataclass
class Figures:
    """Running request, error, status, latency and consumer figures for a group of rows."""

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    server_errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    durations: Counter[int] = field(default_factory=Counter)
    consumers: Counter[str] = field(default_factory=Counter)

    def add(self, status: int, duration: int, consumer: str, failed: bool) -> None:
        self.requests += 1
        self.errors += failed
        self.client_errors += 400 <= status < 500
        self.server_errors += status >= 500
        self.statuses[str(status)] += 1
        self.durations[duration] += 1
        self.consumers[consumer] += 1

    def render(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "client_errors": self.client_errors,
            "client_error_rate": self._rate(self.client_errors),
            "server_errors": self.server_errors,
            "server_error_rate": self._rate(self.server_errors),
            "statuses": dict(sorted(self.statuses.items())),
            **{f"p{pct}_ms": _percentile(self.durations, pct) for pct in (50, 95, 99)},
        }

    def _rate(self, n: int) -> float:
        return round(n / self.requests, 4) if self.requests else 0.0


@dataclass
class ConsumerFigures:
    """One consumer's requests, errors, last request and routes."""

    requests: int = 0
    errors: int = 0
    last_seen: str = ""
    routes: Counter[str] = field(default_factory=Counter)

    def render(self, name: str) -> dict[str, Any]:
        ranked = heapq.nsmallest(3, self.routes.items(), key=lambda item: (-item[1], item[0]))
        return {
            "consumer": name,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "last_seen": self.last_seen,
            "top_routes": [{"route": route, "count": n} for route, n in ranked],
        }


@dataclass
class ErrorGroup:
    """The failures of one route with one text: how many, first and last seen, last status."""

    count: int = 0
    first_seen: str = ""
    last_seen: str = ""
    status: int = 0


def top_consumers(counter: Counter[str], n: int) -> list[dict[str, Any]]:
    """The n most frequent consumers, ties by name."""
    ranked = heapq.nsmallest(n, counter.items(), key=lambda item: (-item[1], item[0]))
    return [{"consumer": name, "count": count} for name, count in ranked]


@dataclass
class Tally:
    """What the rows of one filter add up to so far, and the id of the last row added."""

    filters: Filters = field(default_factory=Filters)
    generation: int = 0  # the store's, when the first row was added
    last_id: int = 0
    totals: Figures = field(default_factory=Figures)
    routes: dict[tuple[str, str], Figures] = field(default_factory=dict)
    latest_errors: deque[tuple[Any, ...]] = field(default_factory=lambda: deque(maxlen=LATEST_ERRORS))
    validation_counts: Counter[str] = field(default_factory=Counter)
    validation_latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds: dict[int, list[int]] = field(default_factory=dict)  # epoch second -> [requests, errors]
    consumers: dict[str, ConsumerFigures] = field(default_factory=dict)
    route_recent: dict[tuple[str, str], deque[tuple[Any, ...]]] = field(default_factory=dict)
    route_errors: dict[tuple[str, str], deque[tuple[Any, ...]]] = field(default_factory=dict)
    error_groups: dict[tuple[str, str, str], ErrorGroup] = field(default_factory=dict)
    first_at: float | None = None
    last_at: float | None = None

    def add(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Add rows of ``id`` then `COLUMNS`, oldest first, all newer than ``last_id``."""
        for row in rows:
            row_id, ts, method, route, _, status, duration, consumer, error, invalid = row
            failed = is_error(status, error)
            self.totals.add(status, duration, consumer or "-", failed)
            if (figures := self.routes.get((method, route))) is None:
                figures = self.routes[method, route] = Figures()
            figures.add(status, duration, consumer or "-", failed)
            who = consumer or "-"
            if (person := self.consumers.get(who)) is None:
                person = self.consumers[who] = ConsumerFigures()
            person.requests += 1
            person.errors += failed
            person.last_seen = max(person.last_seen, ts)
            person.routes[f"{method} {route}"] += 1
            if (recent := self.route_recent.get((method, route))) is None:
                recent = self.route_recent[method, route] = deque(maxlen=RECENT_PER_ROUTE)
            recent.append(row[1:9])
            if failed:
                self.latest_errors.append(row[1:9])
                if (errors := self.route_errors.get((method, route))) is None:
                    errors = self.route_errors[method, route] = deque(maxlen=RECENT_PER_ROUTE)
                errors.append(row[1:9])
                text = error or f"HTTP {status}"
                if (group := self.error_groups.get((method, route, text))) is None:
                    group = self.error_groups[method, route, text] = ErrorGroup(first_seen=ts)
                group.count += 1
                group.first_seen = min(group.first_seen, ts)
                group.last_seen = max(group.last_seen, ts)
                group.status = status
            for item in json.loads(invalid) if invalid else []:
                self.validation_counts[item["field"]] += 1
                latest = {"message": item["message"], "route": route, "method": method}
                self.validation_latest[item["field"]] = latest
            self.latency[bisect.bisect_left(LATENCY_BUCKETS, duration)] += 1  # first bound >= duration
            at = _epoch(ts)
            self.first_at = at if self.first_at is None else min(self.first_at, at)
            self.last_at = at if self.last_at is None else max(self.last_at, at)
            second = self.seconds.setdefault(int(at // 1), [0, 0])
            second[0] += 1
            second[1] += failed
            self.last_id = row_id

    def render(self, every: Tally, view: View | None = None, now: float | None = None) -> dict[str, Any]:
        """The summary of the rows added so far; ``every`` is the unfiltered tally, for consumers.

        ``view`` picks a route's drill-down and the traffic chart's range, which ends at ``now``
        (the wall clock unless given).
        """
        view = view or View()
        routes = [
            {"method": method, "route": route, **f.render(), "top_consumers": top_consumers(f.consumers, 3)}
            for (method, route), f in self.routes.items()
        ]
        routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
        keys = ("ts", "method", "route", "path", "status", "duration_ms", "consumer", "error")
        as_event = functools.partial(_as_event, keys)
        people = heapq.nsmallest(
            SHOWN_GROUPS, self.consumers.items(), key=lambda item: (-item[1].requests, item[0])
        )
        groups = heapq.nlargest(
            SHOWN_GROUPS, self.error_groups.items(), key=lambda item: (item[1].last_seen, item[1].count)
        )
        window = RANGES[view.range]
        since = None if window is None else (time.time() if now is None else now) - window
        ranked = sorted(self.validation_counts.items(), key=lambda item: (-item[1], item[0]))
        return {
            "routes": routes,
            "totals": {**self.totals.render(), "routes": len(routes)},
            "filters": {"consumer": self.filters.consumer, "status": self.filters.status},
            # Every consumer, unfiltered: the dashboard's filter offers them all.
            "consumers": top_consumers(every.totals.consumers, 50),
            "latest_errors": [dict(zip(keys, row, strict=True)) for row in reversed(self.latest_errors)],
            "validation_fields": [
                {"field": name, "count": n, **self.validation_latest[name]} for name, n in ranked
            ],
            "latency_histogram": [
                {"le_ms": le, "count": n}
                for le, n in zip([*LATENCY_BUCKETS, None], self.latency, strict=True)
            ],
            "traffic": self._traffic(since=since),
            "range": view.range,
            "consumer_figures": [figures.render(name) for name, figures in people],
            "error_groups": [
                {"method": method, "route": route, "error": text, **vars(group)}
                for (method, route, text), group in groups
            ],
            "route_detail": None
            if view.route is None
            else {
                "method": view.route[0],
                "route": view.route[1],
                "recent": [as_event(row) for row in reversed(self.route_recent.get(view.route, ()))],
                "errors": [as_event(row) for row in reversed(self.route_errors.get(view.route, ()))],
            },
        }

    def _traffic(self, since: float | None = None, max_points: int = 60) -> list[dict[str, Any]]:
        """Requests and errors per time step (a second up to an hour, so at most max_points steps).

        With ``since``, only the seconds from then on, and the chart starts there.
        """
        if self.first_at is None or self.last_at is None:
            return []
        seconds = (
            self.seconds if since is None else {s: v for s, v in self.seconds.items() if s >= since // 1}
        )
        if not seconds:
            return []
        start, end = (self.first_at, self.last_at) if since is None else (since, max(self.last_at, since))
        step = next((s for s in (1, 5, 10, 30, 60, 300, 600, 3600) if (end - start) / s < max_points), 86400)
        first = int(start // step) * step
        points: dict[int, list[int]] = {}
        for second, (n, errors) in seconds.items():
            point = points.setdefault((second - first) // step, [0, 0])
            point[0] += n
            point[1] += errors
        steps = [points.get(i, [0, 0]) for i in range(max(points) + 1)]
        return [
            {"start": first + i * step, "step_s": step, "requests": n, "errors": errors}
            for i, (n, errors) in enumerate(steps)
        ]


def _as_event(keys: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(keys, row, strict=True))


def _epoch(ts: str) -> float:
    """Seconds since the epoch of a stored (valid) timestamp, as ``parse_ts(ts).timestamp()``.

    Parsing was a third of the work of adding a row: the whole second is parsed once per
    second and zone (the events of one second share it), the fraction added in microseconds.
    """
    whole, dot, rest = ts.partition(".")
    if not dot:
        return _whole_second(ts) / 1
    zone = rest.lstrip("0123456789")
    digits = rest[: len(rest) - len(zone)]
    return (_whole_second(whole + zone) * 1_000_000 + int(digits[:6].ljust(6, "0"))) / 1_000_000


@functools.lru_cache(maxsize=4096)
def _whole_second(ts: str) -> int:
    return int(parse_ts(ts).timestamp())
