"""The dev ingest's figures and events as terminal text: summary, rejections, one line per event.

Everything fits in about 100 columns; free text (routes, consumers, error texts, the key names
of a rejected batch) is clipped and its control characters shown as "?" (``terminal.printable``),
so one odd value never breaks a table or drives the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beacon_otel.devingest.terminal import printable

WIDTH = 100
_COLOURS = {"2": "32", "3": "36", "4": "33", "5": "31"}  # green, cyan, yellow, red


def _cell(text: str, width: int = 60) -> str:
    """Fit free text into a table cell: control characters shown as '?', long text clipped."""
    text = printable(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _grid(rows: list[list[str]], right: set[int]) -> list[str]:
    """Align columns two spaces apart; columns in ``right`` (figures) align right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary (DevIngest.summary() or GET /v1/summary) as text under ~100 columns."""
    if not summary["routes"]:
        return "No events received yet."
    head = ["METHOD", "ROUTE", "REQS", "ERR%", "4XX", "P50ms", "P95ms", "P99ms", "TOP CONSUMER"]
    table = [head]
    totals = {**summary["totals"], "method": "TOTAL", "route": f"{len(summary['routes'])} routes"}
    for r in [*summary["routes"], totals]:
        top = r.get("top_consumers", [])[:1]
        consumer = f"{_cell(top[0]['consumer'], 16)} ({top[0]['count']})" if top else ""
        figures = [r["requests"], f"{r['error_rate']:.1%}", r.get("client_errors", "")]
        latency = ["-" if r.get(k) is None else str(r[k]) for k in ("p50_ms", "p95_ms", "p99_ms")]
        table.append([_cell(r["method"], 7), _cell(r["route"], 28), *map(str, figures), *latency, consumer])
    lines = _grid(table, right={2, 3, 4, 5, 6, 7})
    rule = "-" * max(map(len, lines))
    # The status mix and counts come from a server too (--url): every line is made printable.
    return "\n".join(map(printable, [lines[0], rule, *lines[1:-1], rule, lines[-1], *_details(summary)]))


def _details(summary: dict[str, Any]) -> list[str]:
    """The status mix, the latest errors with their text and validation errors by field."""
    lines = []
    if statuses := summary["totals"].get("statuses"):
        lines += ["", "statuses: " + ", ".join(f"{code} x{n}" for code, n in statuses.items())]
    if errors := summary.get("latest_errors"):
        lines += ["", "latest errors:"]
        for e in errors[:5]:
            where = f"{e['ts'][11:19]} {e['method']} {e['route']} {e['status']}"
            lines.append(_cell(f"  {where}  {e['error'] or 'HTTP ' + str(e['status'])}", WIDTH))
    if fields := summary.get("validation_fields"):
        lines += ["", "validation errors by field:"]
        for f in fields[:8]:
            lines.append(
                _cell(f"  {f['field']} x{f['count']}: {f['message']} ({f['method']} {f['route']})", WIDTH)
            )
    return lines


def format_rejection(rejection: dict[str, Any]) -> str:
    """One line for a rejected batch: its status, error and first three problems."""
    problems = rejection.get("problems", [])[:3]
    shown = "; ".join(f"[{p['index']}] {p['field']}: {p['problem']}" for p in problems)
    # Key names and header values in it are the sender's: never raw on a terminal.
    line = f"rejected batch ({rejection['status']}): {rejection['error']}" + (shown and f": {shown}")
    return printable(line)


def format_event(event: dict[str, Any], *, colour: bool = False) -> str:
    """One line for one event, as `beacon-otel tail` prints it; status and error coloured."""
    paint: Callable[[str, str], str] = (
        (lambda code, text: f"\033[{code}m{text}\033[0m") if colour else (lambda code, text: text)
    )
    status = printable(str(event["status"]))
    parts = [
        printable(event["ts"][11:23]),
        f"{_cell(event['method'], 7):<6}",
        _cell(event["path"], 40),
        paint(_COLOURS.get(status[0], "0"), status),
        printable(f"{event['duration_ms']}ms"),
        _cell(event["consumer"] or "-", 24),
    ]
    if event["route"] != event["path"]:
        parts.insert(3, f"({_cell(event['route'], 40)})")
    if event.get("error"):
        parts.append(paint("31", _cell(event["error"], 80)))
    if fields := event.get("validation_errors"):
        parts.append(paint("33", "invalid: " + _cell(", ".join(v["field"] for v in fields), 60)))
    return " ".join(parts)


def format_events(events: list[dict[str, Any]]) -> str:
    """A few events as a table under ~100 columns: route, status, time, consumer, what went wrong."""
    table = [["METHOD", "PATH", "STATUS", "MS", "CONSUMER", "ERROR / VALIDATION"]]
    for e in events:
        problem = e.get("error") or "; ".join(
            f"{v['field']}: {v['message']}" for v in e.get("validation_errors") or []
        )
        table.append(
            [
                _cell(e["method"], 7),
                _cell(e["path"], 24),
                str(e["status"]),
                str(e["duration_ms"]),
                _cell(e["consumer"] or "-", 12),
                _cell(problem or "-", 36),
            ]
        )
    return "\n".join(_grid(table, right={2, 3}))
