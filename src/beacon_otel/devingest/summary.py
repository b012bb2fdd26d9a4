"""Per-route summary of the stored events, and the text lines the CLI prints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from beacon_otel.devingest.validation import _CONTROL_RE


def _percentile(sorted_values: list[int], pct: int) -> int | None:
    """Nearest-rank percentile: the smallest value with at least pct% of values at or below."""
    if not sorted_values:
        return None
    rank = -(-pct * len(sorted_values) // 100)  # ceil in integers: no float rounding surprises
    return sorted_values[max(rank, 1) - 1]


def _aggregate(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Request, error and latency figures for (status, duration_ms, consumer, error) rows."""
    errors = sum(1 for status, _, _, error in rows if error is not None or status >= 500)
    durations = sorted(row[1] for row in rows)
    return {
        "requests": len(rows),
        "errors": errors,
        "error_rate": round(errors / len(rows), 4) if rows else 0.0,
        "p50_ms": _percentile(durations, 50),
        "p95_ms": _percentile(durations, 95),
    }


def _summarise(rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """Group (method, route, status, duration_ms, consumer, error) rows into the summary."""
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for method, route, *rest in rows:
        groups.setdefault((method, route), []).append(tuple(rest))
    routes = []
    for (method, route), group in groups.items():
        consumers = Counter("-" if row[2] is None else row[2] for row in group)
        top = sorted(consumers.items(), key=lambda item: (-item[1], item[0]))[:3]
        top_consumers = [{"consumer": name, "count": n} for name, n in top]
        routes.append({"method": method, "route": route, **_aggregate(group), "top_consumers": top_consumers})
    routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
    every = [row for group in groups.values() for row in group]
    return {"routes": routes, "totals": {**_aggregate(every), "routes": len(routes)}}


def _cell(text: str, width: int = 60) -> str:
    """Fit free text into a table cell: control characters shown as '?', long text clipped."""
    text = _CONTROL_RE.sub("?", text)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary (from DevIngest.summary() or GET /v1/summary) as a text table."""
    if not summary["routes"]:
        return "No events received yet."
    head = ["METHOD", "ROUTE", "REQUESTS", "ERRORS", "ERR%", "P50ms", "P95ms", "TOP CONSUMERS"]
    table = [head]
    totals = {**summary["totals"], "method": "TOTAL", "route": f"{len(summary['routes'])} routes"}
    for r in [*summary["routes"], totals]:
        top = (f"{_cell(c['consumer'], 24)} ({c['count']})" for c in r.get("top_consumers", []))
        figures = [r["requests"], r["errors"], f"{r['error_rate']:.1%}", r["p50_ms"], r["p95_ms"]]
        table.append([_cell(r["method"]), _cell(r["route"]), *map(str, figures), ", ".join(top)])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    # Text columns (method, route, consumers) align left, figures right.
    align = [str.ljust, str.ljust, *[str.rjust] * 5, str.ljust]
    lines = ["  ".join(a(c, w) for a, c, w in zip(align, row, widths, strict=True)).rstrip() for row in table]
    rule = "-" * max(map(len, lines))
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def format_rejection(rejection: dict[str, Any]) -> str:
    """One line for a rejected batch: its status, error and first three problems."""
    problems = rejection.get("problems", [])[:3]
    shown = "; ".join(f"[{p['index']}] {p['field']}: {p['problem']}" for p in problems)
    return f"rejected batch ({rejection['status']}): {rejection['error']}" + (shown and f": {shown}")
