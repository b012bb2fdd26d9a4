"""The benchmark report: tables rendered from the results' data, the people's commentary kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import render as report


def _results(beacon_at_1000: float) -> dict[str, Any]:
    """A run's results with only the route section and its instruction counts."""
    cells = {f"{size}/{position}" for size in (10, 100, 1000) for position in ("first", "last")}

    def row(above: float, us: float = 100.0) -> dict[str, float]:
        return {"us": us, "cpu_us": us, "above": above, "above_cpu": above}

    return {
        "meta": {
            "command": "make bench",
            "mode": "full run",
            "finished": "2026-11-28 10:10 UTC",
            "wall_s": 600.0,
            "cpu": "test CPU",
            "cores": 2,
            "python": "CPython 3.11",
            "os": "Linux",
            "versions": {"beacon-otel": "0.1.0", "fastapi": "1"},
            "commit": "abc1234",
            "load_before": [1.0, 1.0, 1.0],
            "load_after": [1.0, 1.0, 1.0],
            "calibration": {"dict.get (hit)": 40.0},
        },
        "settings": {"rate": 1000, "memory_seconds": 120.0},
        "routes": {
            "rounds": 3,
            "delivered": {"fastapi/beacon": {"beacon_events": 10}},
            "table": {
                "fastapi": {
                    "bare": {cell: row(0.0) for cell in cells},
                    "beacon": {cell: row(beacon_at_1000 if cell == "1000/last" else 200.0) for cell in cells},
                }
            },
        },
        "instructions": {
            "routes": {
                "fastapi/bare": {"10/last": 400_000.0, "1000/last": 4_000_000.0},
                "fastapi/beacon": {"10/last": 600_000.0, "1000/last": 4_000_000.0 + beacon_at_1000 * 1000},
            }
        },
    }


def test_render_keeps_the_commentary_and_replaces_the_tables(tmp_path: Path) -> None:
    """A new run rewrites every table from its data but keeps what people wrote between the markers."""
    json_path, md_path = tmp_path / "results.json", tmp_path / "RESULTS.md"
    report.write(_results(beacon_at_1000=4000.0), json_path, md_path)
    first = md_path.read_text()
    assert report.PLACEHOLDER in first
    md_path.write_text(first.replace(report.PLACEHOLDER, "The 1,000-route overhead comes from re-matching."))

    report.write(_results(beacon_at_1000=210.0), json_path, md_path)

    second = md_path.read_text()
    assert "The 1,000-route overhead comes from re-matching." in second
    assert report.PLACEHOLDER not in second
    assert second.count(report.COMMENTARY_START) == 1
    assert (
        json.loads(json_path.read_text())["routes"]["table"]["fastapi"]["beacon"]["1000/last"]["above"]
        == 210.0
    )
    assert "+4,000" in first and "+4,000" not in second


def test_route_target_is_judged_on_the_instruction_ratio() -> None:
    """The flat-in-size target reads the counted ratio: (beacon - bare) at 1,000 routes over at 10."""
    flat = report.render(_results(beacon_at_1000=210.0))
    steep = report.render(_results(beacon_at_1000=4000.0))

    flat_row = next(line for line in flat.splitlines() if line.startswith("| overhead at 1,000 routes"))
    steep_row = next(line for line in steep.splitlines() if line.startswith("| overhead at 1,000 routes"))
    assert "| 1.05x |" in flat_row and "**met**" in flat_row
    assert "| 20.00x |" in steep_row and "**missed** by 18.90" in steep_row


def test_commentary_of_a_file_without_markers_is_the_placeholder() -> None:
    """A RESULTS.md from before the markers (or none at all) gives the placeholder, not its old text."""
    assert report.commentary_of("# beacon-otel benchmarks\n\nold prose") == report.PLACEHOLDER
    assert report.commentary_of("") == report.PLACEHOLDER
