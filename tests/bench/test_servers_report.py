"""The real-server section: overheads paired round by round, ratios and verdicts from wrk's figures."""

from __future__ import annotations

from typing import Any

from bench.report import servers
from bench.scenarios import real_servers


def _run(cpu: float, p50: float, p99: float) -> dict[str, Any]:
    return {
        "requests": 10_000,
        "duration_us": 5_000_000,
        "errors": 0,
        "non_2xx": 0,
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p99 * 2,
        "req_s": 2_000.0,
        "us_per_request": 500.0,
        "cpu_us_per_request": cpu,
        "load": 1.0,
    }


def _section() -> dict[str, Any]:
    # Two rounds; the second round's machine is slower for every variant alike.
    cpu = {"bare": (200, 300), "beaconhq": (250, 350), "apitally": (500, 600), "beacon": (300, 400)}
    cpu |= {"otlp": (800, 900), "beacon+otlp": (840, 945)}
    p99 = {key: 9_000 if key == "beacon" else 4_000 for key in cpu}  # beacon's spread: 4.5x, bare's 2x
    runs = {key: [_run(c, 2_000, p99[key]) for c in pair] for key, pair in cpu.items()}
    return {
        "settings": {"rounds": 2, "warmup_s": 2, "seconds": 8, "connections": 8},
        "labels": {v.key: v.label for v in real_servers.VARIANTS},
        "servers": {"fastapi": real_servers.SERVERS["fastapi"]},
        "runs": {"fastapi": runs},
        "medians": {"fastapi": {key: real_servers.medians(cells) for key, cells in runs.items()}},
    }


def test_overheads_pair_each_round_with_its_own_bare_run() -> None:
    """+100 us in both rounds (300 - 200, 400 - 300): the slower second round does not count twice."""
    runs = _section()["runs"]["fastapi"]
    assert servers.above_bare(runs, "beacon") == 100
    assert servers.above_bare(runs, "beaconhq") == 50


def test_targets_are_ratios_of_overheads_spreads_and_cpu() -> None:
    """2x beaconhq's overhead, a third of Apitally's, the spread 2.25x bare's, 1.05x OTLP alone."""
    found = {target: value for target, _, value, _ in servers.targets(_section())}
    assert found["overhead <= 2x beaconhq 0.2 (server CPU)"] == 2.0
    assert found["overhead <= Apitally 1.0's (server CPU)"] == 100 / 300
    assert found["p99/p50 within 1.5x of the bare app's"] == 2.25
    assert found["beside OTLP <= 1.05x OTLP alone (server CPU)"] == 892.5 / 850


def test_the_section_renders_every_variant_and_verdict() -> None:
    text = servers.render(_section(), {})
    assert "| beacon-otel under opentelemetry-instrument |" in text
    assert "| p99/p50 within 1.5x of the bare app's | FastAPI | 2.25x | **missed** by 0.75 |" in text
    assert "| overhead <= 2x beaconhq 0.2 (server CPU) | FastAPI | 2.00x | **met** |" in text


def test_beacon_alone_runs_the_lean_source_and_beside_otlp_the_stock_instrumentation(
    monkeypatch: Any,
) -> None:
    """The real-server variants are what a user runs: Beacon alone (no exporter) gets the lean span
    sources (Flask, Django); beside OTLP, the stock instrumentations."""
    import os

    from beacon_otel.setup import environment

    chosen = {}
    for variant in real_servers.VARIANTS:
        if not (variant.autorun and variant.beacon):
            continue
        env = real_servers.server_environment("flask", variant, "http://i", "http://s", "/tmp/spool")
        for name in [name for name in os.environ if name.startswith(("OTEL_", "BEACON_"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        chosen[variant.key] = environment.beacon_reads_alone(os.environ)
    assert chosen == {"beacon": True, "beacon+otlp": False}


def test_what_arrived_is_counted_per_request_served() -> None:
    """Beacon's events and OTLP's server spans per request the server handled (warm-up and shutdown
    included): a variant that kept up shows 1.00; one that lost a tenth, 0.90."""
    counted = {"served": 12_000, "events_arrived": 12_000}
    kept_up = [{**_run(300, 2_000, 4_000), **counted, "spans_arrived": 0}] * 2
    beside = [{**_run(900, 2_000, 4_000), **counted, "spans_arrived": 10_800}] * 2
    cell, both = real_servers.medians(kept_up), real_servers.medians(beside)
    assert (cell["events_per_request"], cell["spans_per_request"]) == (1.0, 0.0)
    assert servers._arrived(cell) == "1.00 events"
    assert servers._arrived(both) == "1.00 events, 0.90 spans"
    assert servers._arrived(real_servers.medians(kept_up, counted=False)) == "n/a"  # events went elsewhere
