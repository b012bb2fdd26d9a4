"""The real-server section of ``bench/RESULTS.md``: tables and targets from ``bench.scenarios.real_servers``."""

from __future__ import annotations

import statistics
from typing import Any

FRAMEWORKS = {"fastapi": "FastAPI", "flask": "Flask", "django": "Django"}
ORDER = ("bare", "beaconhq", "apitally", "beacon", "otlp", "beacon+otlp")


def above_bare(runs: dict[str, list[dict[str, Any]]], key: str, measure: str = "cpu_us_per_request") -> float | None:
    """Median over rounds of (variant - bare) per request, each round paired with its own bare run."""
    pairs = list(zip(runs.get(key, []), runs.get("bare", []), strict=False))
    if not pairs:
        return None
    return statistics.median(v[measure] - b[measure] for v, b in pairs)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def _receivers(settings: dict[str, Any]) -> str:
    if settings.get("events_to", "the sink") == "the sink":
        return (
            "Every variant's events and spans go to one accept-anything sink, in its own process on wrk's core "
            "(not to the strict dev ingest: its validation, about 3 ms of CPU per 100 events, would pause wrk there, "
            "and wrk's clock would count the pause as the server's latency)."
        )
    return (
        "Events go to the strict dev ingest and spans to an accept-anything sink, in their own processes on wrk's "
        "core (`--strict-ingest`: the ingest's validation pauses wrk, and wrk's clock counts that as latency)."
    )


def _arrived(cell: dict[str, float]) -> str:
    """Events and server spans that reached the sink per request served: "-" for neither, "n/a" if not counted."""
    if "events_per_request" not in cell:
        return "n/a"
    parts = [
        f"{cell[key]:.2f} {name}"
        for key, name in (("events_per_request", "events"), ("spans_per_request", "spans"))
        if cell[key] > 0
    ]
    return ", ".join(parts) or "-"


def targets(section: dict[str, Any]) -> list[tuple[str, str, float | None, float]]:
    """(target, framework, value, limit) for each of the issue's real-server targets."""
    found: list[tuple[str, str, float | None, float]] = []
    for framework in [fw for fw in FRAMEWORKS if fw in section["runs"]]:  # the JSON sorts its keys
        runs, name = section["runs"][framework], FRAMEWORKS[framework]
        medians = section["medians"][framework]
        beacon = above_bare(runs, "beacon")
        found.append(("overhead <= 2x beaconhq 0.2 (server CPU)", name, _ratio(beacon, above_bare(runs, "beaconhq")), 2.0))
        found.append(("overhead <= Apitally 1.0's (server CPU)", name, _ratio(beacon, above_bare(runs, "apitally")), 1.0))
        spread = _ratio(medians.get("beacon", {}).get("spread"), medians.get("bare", {}).get("spread"))
        found.append(("p99/p50 within 1.5x of the bare app's", name, spread, 1.5))
        beside = _ratio(
            medians.get("beacon+otlp", {}).get("cpu_us_per_request"), medians.get("otlp", {}).get("cpu_us_per_request")
        )
        found.append(("beside OTLP <= 1.05x OTLP alone (server CPU)", name, beside, 1.05))
    return found


def render(section: dict[str, Any], results: dict[str, Any]) -> str:
    settings = section["settings"]
    rows = [
        "## 7. Real servers under load",
        "",
        "`bench/scenarios/real_servers.py`. wrk (1 thread, "
        f"{settings['connections']} connections) on core 1 against the server pinned to core 0 (`taskset`); "
        "a 42-route app with path parameters (`bench/harness/served.py`), every request to the last route with "
        "`X-API-Key`. Each variant started fresh each round, warmed up "
        f"{settings['warmup_s']:.0f} s, loaded {settings['seconds']:.0f} s; {settings['rounds']} rounds, variants "
        f"interleaved, order rotated; medians. {_receivers(settings)} *us/request* is 1 / throughput (the server's core is saturated); *CPU* is the server's process CPU "
        "(every thread and process) per completed request, which the machine's other load disturbs less; "
        "*above bare* pairs each round with that round's bare run. *Spread* is p99/p50, median of rounds. "
        "*Arrived* is what the sink received per request served (events, and server spans for OTLP), warm-up and "
        "shutdown included: 1.00 is every request's. "
        "*Load* is the machine's 1-minute load average when each run ended (median of rounds).",
        "",
    ]
    if "load_before" in section:
        rows[-1:-1] = [
            "",
            f"Run alone (`python -m bench.scenarios.real_servers --write`, {section.get('mode', 'full')}), load "
            f"average {', '.join(f'{x:.2f}' for x in section['load_before'])} at its start.",
        ]
    for framework in [fw for fw in FRAMEWORKS if fw in section["medians"]]:
        medians, runs = section["medians"][framework], section["runs"][framework]
        beaconhq, apitally = above_bare(runs, "beaconhq"), above_bare(runs, "apitally")
        bare_spread = medians.get("bare", {}).get("spread")
        rows += [
            f"### {FRAMEWORKS[framework]}: {section['servers'][framework]}",
            "",
            "| variant | req/s | us/request | CPU us/request | CPU above bare | / beaconhq | / Apitally | "
            "p50 | p99 | p99.9 | spread | spread / bare's | errors | arrived | load |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in ORDER:
            cell = medians.get(key)
            if not cell:
                continue
            above = above_bare(runs, key) if key != "bare" else None
            load = statistics.median(run["load"] for run in runs[key])
            rows.append(
                f"| {section['labels'][key]} | {cell['req_s']:,.0f} | {cell['us_per_request']:.0f} | "
                f"{cell['cpu_us_per_request']:.0f} | {_fmt(above, '{:+.0f} us') if key != 'bare' else '-'} | "
                f"{_fmt(_ratio(above, beaconhq), '{:.2f}x') if key != 'bare' else '-'} | "
                f"{_fmt(_ratio(above, apitally), '{:.2f}x') if key != 'bare' else '-'} | "
                f"{_ms(cell['p50_us'])} | {_ms(cell['p99_us'])} | {_ms(cell['p999_us'])} | {cell['spread']:.1f}x | "
                f"{_fmt(_ratio(cell['spread'], bare_spread), '{:.2f}x')} | "
                f"{cell['errors'] + cell['non_2xx']:.0f} | {_arrived(cell)} | {load:.1f} |"
            )
        rows.append("")
    rows += [
        "### Targets on real servers",
        "",
        "| target | framework | value | verdict |",
        "|---|---|---:|---|",
    ]
    for target, framework, value, limit in targets(section):
        verdict = "not measured" if value is None else "**met**" if value <= limit else f"**missed** by {value - limit:.2f}"
        rows.append(f"| {target} | {framework} | {_fmt(value, '{:.2f}x')} | {verdict} |")
    rows.append("")
    return "\n".join(rows)
