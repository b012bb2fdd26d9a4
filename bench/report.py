"""``bench/RESULTS.md`` from one run's figures: the targets, then a section per benchmark."""

from __future__ import annotations

import datetime
import math
import statistics
from typing import Any

from bench import overhead


def render(
    settings: Any,
    machine: dict[str, Any],
    wall: float,
    outcomes: list[overhead.Outcome],
    calls: dict[str, Any],
    exported: list[dict[str, Any]],
    held: dict[str, dict[str, Any]],
) -> str:
    """The whole report as Markdown."""
    by_key = {outcome.variant.key: outcome for outcome in outcomes}
    above = {key: _above(o, by_key[f"{o.variant.framework}/bare"], "wall_us") for key, o in by_key.items()}
    above_cpu = {key: _above(o, by_key[f"{o.variant.framework}/bare"], "cpu_us") for key, o in by_key.items()}
    lines: list[str] = []
    out = lines.append
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick mode (`BENCH_QUICK=1`): fewer rounds, noisier" if settings.quick else "full run"
    out("# beacon-otel benchmarks")
    out("")
    out(
        f"Every figure below comes from one run of `make bench` (`python -m bench.run`), {mode}, "
        f"on {now}; it took {wall / 60:.1f} minutes. Regenerate with `make bench`."
    )
    out("")
    out("## Machine")
    out("")
    out("| | |")
    out("|---|---|")
    out(f"| CPU | {machine['cpu']}, {machine['cores']} cores |")
    out(f"| Python | {machine['python']} ({machine['os']}) |")
    out(f"| beacon-otel | {machine['versions']['beacon-otel']}, commit {machine['commit']} |")
    out(
        "| packages | "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if k != "beacon-otel")
        + " |"
    )
    load_before = ", ".join(f"{x:.2f}" for x in machine["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in machine["load_after"])
    out(f"| load average | {load_before} before, {load_after} after (1, 5, 15 min) |")
    calibration = ", ".join(f"{name} {ns:.0f} ns" for name, ns in machine["calibration"].items())
    out(f"| calibration | {calibration} (to scale these figures to another machine) |")
    out("")
    out(_targets(by_key, above, above_cpu, calls, exported, held))
    out(_reading(machine, above, above_cpu, calls, exported))
    out(_overhead_section(settings, by_key, above, above_cpu))
    out(_processor_section(settings, calls))
    out(_export_section(settings, exported))
    out(_memory_section(settings, held))
    return "\n".join(lines).rstrip() + "\n"


def _above(outcome: overhead.Outcome, bare: overhead.Outcome, metric: str) -> float:
    """Median over rounds of (variant - bare) per request: rounds pair up, so drift cancels."""
    if outcome is bare:
        return 0.0
    pairs = zip(getattr(outcome, metric), getattr(bare, metric), strict=True)
    return statistics.median(v - b for v, b in pairs)


def _ratio(above: dict[str, float], key: str, base: str) -> float:
    return above[key] / above[base]


def _targets(by_key, above, above_cpu, calls, exported, held) -> str:
    rows = ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    hook_old = calls["modes"]["old"]["FastAPI: server_request_hook + on_end (X-API-Key)"] / 1000
    hook_new = calls["modes"]["new"]["FastAPI: server_request_hook + on_end (X-API-Key)"] / 1000
    worst = max(
        ns / 1000
        for mode in calls["modes"].values()
        for case, ns in mode.items()
        if "hook" in case and "in all" not in case
    )
    fast = [calls["candidates"][mode].get("all of them", math.nan) / 1000 for mode in ("old", "new")]
    rows.append(
        f"| `on_end` + hooks <= 5 us median | FastAPI {hook_old:.1f} us (old semconv), "
        f"{hook_new:.1f} us (new); "
        f"worst case {worst:.1f} us; with every measured candidate {fast[0]:.1f} / {fast[1]:.1f} us | "
        f"{_verdict(max(hook_old, hook_new), 5.0)} |"
    )
    for framework, name in (("fastapi", "ASGI"), ("flask", "WSGI")):
        ratio = _ratio(above, f"{framework}/beacon", f"{framework}/otlp")
        ratio_cpu = _ratio(above_cpu, f"{framework}/beacon", f"{framework}/otlp")
        proposed = _ratio(above, f"{framework}/beacon-proposed", f"{framework}/otlp")
        what = by_key[f"{framework}/beacon-proposed"].variant.label.split(": ", 1)[1]
        rows.append(
            f"| beacon-otel alone <= stock OTel + OTLP ({name}) | overhead ratio {ratio:.2f} "
            f"(CPU {ratio_cpu:.2f}); {proposed:.2f} with the proposed auto-run defaults ({what}) | "
            f"{_verdict(ratio, 1.0, unit='')} as is; {_verdict(proposed, 1.0, unit='')} as proposed |"
        )
    for framework, name in (("fastapi", "ASGI"), ("flask", "WSGI")):
        pair = (f"{framework}/beacon+otlp", f"{framework}/otlp-autorun")
        added = above[pair[0]] / above[pair[1]] - 1
        added_cpu = above_cpu[pair[0]] / above_cpu[pair[1]] - 1
        rows.append(
            f"| beside OTLP, beacon-otel adds <= 5% ({name}) | {added * 100:+.1f}% "
            f"(CPU {added_cpu * 100:+.1f}%) over OTLP alone, both under opentelemetry-instrument; "
            f"{above[pair[0]] - above[pair[1]]:+.0f} us per request | "
            f"{_verdict(added * 100, 5.0, unit='%')} |"
        )
    plain = next(r for r in exported if r["receiver"] == "strict dev ingest" and not r["gzip"])
    per_core = 1e6 / plain["cpu_ms_per_1k"]
    sink = next(r for r in exported if r["receiver"] != "strict dev ingest" and not r["gzip"])
    rows.append(
        "| export >= 50,000 events/s on one core | "
        f"client CPU {plain['cpu_ms_per_1k']:.1f} ms per 1,000 events = "
        f"{per_core:,.0f} events/s per core; wall {sink['events_per_s']:,.0f}/s to a cheap sink, "
        f"{plain['events_per_s']:,.0f}/s to the strict dev ingest (bound by its own CPU) | "
        f"{'met' if per_core >= 50_000 else 'missed'} (per client core) |"
    )
    alone = held["buffer only (no spool)"]
    bounded = alone["max_buffered"] <= 10_000 + 100
    per_10k = alone["per_10k"]
    figure = (
        f"{per_10k / 2**20:.1f} MiB per 10,000 buffered events" if per_10k else "n/a (buffer never filled)"
    )
    rows.append(
        "| memory bounded over an outage; figure per 10k events | "
        f"at most {alone['max_buffered']:,} events held "
        f"(`max_buffer_size` 10,000 + one batch in flight), RSS drift "
        f"{alone['drift_per_min'] / 2**20:+.2f} MiB/min at the plateau; {figure} | "
        f"{'met' if bounded else 'missed'} |"
    )
    rows.append("")
    return "\n".join(rows)


def _reading(machine, above, above_cpu, calls, exported) -> str:
    """What the figures add up to, in a few sentences computed from this run."""
    hook = calls["modes"]["old"]["FastAPI: server_request_hook + on_end (X-API-Key)"] / 1000
    sink = next(r for r in exported if r["receiver"] != "strict dev ingest" and not r["gzip"])
    delivery = sink["cpu_ms_per_1k"] - sink["submit_cpu_ms_per_1k"]
    added = above["fastapi/beacon"] - above["fastapi/instrumented"]
    added_cpu = above_cpu["fastapi/beacon"] - above_cpu["fastapi/instrumented"]
    instrumentation = above["fastapi/instrumented"]
    busy = max(machine["load_before"][0], machine["load_after"][0]) > 0.5
    rows = [
        "## Reading the results",
        "",
        f"- Most of the per-request cost of beacon-otel is the stock OpenTelemetry instrumentation it rides "
        f"on: {instrumentation:.0f} us per FastAPI request with no processor at all, which an OpenTelemetry "
        "user pays already. The SDK middlewares of beaconhq and peekapi build no spans and cost far less.",
        f"- Beacon's own work per request, measured in isolation: {hook:.1f} us on the request thread "
        f"(hook + `on_end`, section 2) and {delivery:.1f} us on the delivery thread (batching, JSON, HTTP; "
        f"section 3). End to end it adds {added:+.0f} us wall, {added_cpu:+.0f} us CPU to the "
        "instrumentation alone (FastAPI): more than the two add up to in isolation. This suite does not "
        "attribute the difference; likely parts are the delivery thread contending with the request "
        "thread for the GIL, and noise (below).",
        "- *Proposed* rows and candidates are measured by patching in `bench/` only. The two auto-run "
        "defaults (`_exclude_asgi_spans_by_default`, `_disable_meters_nobody_reads` in `bench/overhead.py`) "
        "and the attributes, events, positional, registry and submit candidates of `bench/fastpath.py` "
        "have since been applied in `src/`: the *as is* rows include them, and re-applying them changes "
        "nothing but noise.",
    ]
    if busy:
        rows.append(
            "- The machine was shared with other work during this run (see the load average): rounds are "
            "interleaved and paired and medians are reported, but differences of less than about 10% between "
            "end-to-end variants are within the noise; the CPU columns are the steadier figures."
        )
    rows.append("")
    return "\n".join(rows)


def _verdict(value: float, limit: float, unit: str = " us") -> str:
    if value <= limit:
        return "met"
    if unit == "":
        return f"missed by {value - limit:.2f}"
    if unit == "%":
        return f"missed by {value - limit:.1f} points"
    return f"missed by {value - limit:.1f} us ({(value / limit - 1) * 100:.0f}% over)"


def _overhead_section(settings: Any, by_key, above, above_cpu) -> str:
    rows = [
        "## 1. Per-request overhead, in process",
        "",
        f"`bench/overhead.py`. Each variant in its own process, set up once, warmed up with "
        f"{settings.warmup:,} requests, then {settings.rounds} rounds of {settings.requests:,} requests "
        "(`GET /users/{n}` with `X-API-Key`), the variants interleaved and their order rotated each round. "
        "ASGI: the app called directly with a minimal scope on one event loop; WSGI: a minimal environ and "
        "`start_response`. Medians. *Above bare* pairs each round with the bare app's round of the same "
        "number. *CPU* is the process CPU time (all threads) of the round plus the flush after it, so the "
        "delivery threads' work is counted. Beacon events go to the strict dev ingest, OTLP and peekapi to "
        "the sink, each in its own process; *delivered* is what they received over all rounds.",
        "",
    ]
    for framework, title in (("fastapi", "ASGI: FastAPI"), ("flask", "WSGI: Flask")):
        rows += [
            f"### {title}",
            "",
            "| variant | us/request | above bare | CPU us/request | delivered |",
            "|---|---:|---:|---:|---|",
        ]
        for key, outcome in by_key.items():
            if outcome.variant.framework != framework:
                continue
            above_cell = "floor" if key.endswith("/bare") else f"{above[key]:+.1f}"
            rows.append(
                f"| {outcome.variant.label} | {outcome.wall_median:.1f} | {above_cell} | "
                f"{outcome.cpu_median:.1f} | "
                f"{_delivered(outcome)} |"
            )
        rows.append("")
    rows += [
        "### Ratios (overhead above the bare app)",
        "",
        "| comparison | ASGI | ASGI, CPU | WSGI | WSGI, CPU |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(key: str, base: str, framework: str) -> str:
        k, b = f"{framework}/{key}", f"{framework}/{base}"
        if k not in above or b not in above:
            return "n/a | n/a"
        return f"{_ratio(above, k, b):.2f} | {_ratio(above_cpu, k, b):.2f}"

    def added(key: str, base: str, framework: str) -> str:
        k, b = f"{framework}/{key}", f"{framework}/{base}"
        return f"{(above[k] / above[b] - 1) * 100:+.1f}% | {(above_cpu[k] / above_cpu[b] - 1) * 100:+.1f}%"

    rows += [
        "| beacon-otel alone / stock OTel + OTLP | "
        + " | ".join(cell("beacon", "otlp", f) for f in ("fastapi", "flask"))
        + " |",
        "| beacon-otel alone, proposed: send/receive spans excluded / stock OTel + OTLP | "
        + " | ".join(cell("beacon-nosend", "otlp", f) for f in ("fastapi", "flask"))
        + " |",
        "| beacon-otel alone, proposed: all proposed defaults / stock OTel + OTLP | "
        + " | ".join(cell("beacon-proposed", "otlp", f) for f in ("fastapi", "flask"))
        + " |",
        "| beacon-otel alone / beaconhq 0.2.0 | "
        + " | ".join(cell("beacon", "beaconhq", f) for f in ("fastapi", "flask"))
        + " |",
        "| beacon-otel + OTLP vs OTLP alone (both auto-run) | "
        + " | ".join(added("beacon+otlp", "otlp-autorun", f) for f in ("fastapi", "flask"))
        + " |",
        "| beacon-otel + OTLP vs stock OTel + OTLP (manual set-up) | "
        + " | ".join(added("beacon+otlp", "otlp", f) for f in ("fastapi", "flask"))
        + " |",
        "| OTLP under opentelemetry-instrument vs stock OTel + OTLP (manual set-up) | "
        + " | ".join(added("otlp-autorun", "otlp", f) for f in ("fastapi", "flask"))
        + " |",
        "",
        "*CPU* columns use the CPU figures (all threads, delivery included) instead of wall time; with other "
        "processes on the machine they are the steadier of the two.",
        "",
        "*Proposed* rows patch auto-run in the benchmark process (`bench/overhead.py`; both defaults are "
        "now in `src/beacon_otel/autorun.py`, so these rows equal the plain ones): "
        "`_exclude_asgi_spans_by_default` makes `AutoRun.instrumentor_kwargs` pass "
        '`exclude_spans=["receive", "send"]` to the FastAPI instrumentor when Beacon is on; '
        "`_disable_meters_nobody_reads` makes `AutoRun.configurator_kwargs` pass the SDK's "
        "`_disable_meter_configurator` when no metrics exporter is configured (the SDK otherwise installs a "
        "`MeterProvider` with no reader, and every HTTP instrumentation records into it on every request).",
        "",
    ]
    return "\n".join(rows)


def _delivered(outcome: overhead.Outcome) -> str:
    d = outcome.delivered
    parts = []
    if d.get("beacon_events"):
        parts.append(f"{d['beacon_events']:,} Beacon events")
    if d.get("beacon_batches_rejected"):
        parts.append(f"{d['beacon_batches_rejected']} batches REJECTED")
    if d.get("spans"):
        parts.append(f"{d['spans']:,} spans ({d['server_spans']:,} server)")
    if d.get("peekapi_events"):
        parts.append(f"{d['peekapi_events']:,} peekapi events")
    if outcome.not_ok:
        parts.append(f"{outcome.not_ok} non-200 responses")
    return ", ".join(parts) or "-"


def _processor_section(settings: Any, calls: dict[str, Any]) -> str:
    modes = calls["modes"]
    rows = [
        "## 2. The processor alone",
        "",
        f"`bench/processor.py`. Real finished spans (one request served under the stock instrumentation), "
        f"the hooks called with the scope, environ or request the instrumentation passed; median of "
        f"{settings.call_rounds} rounds of {settings.calls:,} calls, ns per call. *Old* is the default "
        "semantic conventions, *new* `OTEL_SEMCONV_STABILITY_OPT_IN=http`.",
        "",
        "| case | old (ns) | new (ns) |",
        "|---|---:|---:|",
    ]
    for case in modes["old"]:
        rows.append(f"| {case} | {modes['old'][case]:,.0f} | {modes['new'][case]:,.0f} |")
    rows += [
        "",
        "### Where `on_end` spends its time (FastAPI span, old semconv)",
        "",
        "| stage | ns |",
        "|---|---:|",
    ]
    rows += [f"| {stage} | {ns:,.0f} |" for stage, ns in calls["breakdown"].items()]
    candidates = calls["candidates"]
    rows += [
        "",
        "### Candidate fast paths for `src/` (measured by patching; most now applied, see above)",
        "",
        "`bench/fastpath.py`: FastAPI `server_request_hook` + `on_end`, each candidate alone and all "
        "together, interleaved per round; every candidate is checked to produce exactly the events the "
        "current code does.",
        "",
        "| candidate | old (ns) | saved | new (ns) | saved |",
        "|---|---:|---:|---:|---:|",
    ]
    base_old, base_new = candidates["old"]["as is"], candidates["new"]["as is"]
    for name in candidates["old"]:
        old, new = candidates["old"][name], candidates["new"][name]
        if math.isnan(old) or math.isnan(new):
            rows.append(f"| {name} | stale: its local copy no longer matches src/ | | | |")
            continue
        saved_old = "" if name == "as is" else f"{base_old - old:+,.0f}"
        saved_new = "" if name == "as is" else f"{base_new - new:+,.0f}"
        rows.append(f"| {name} | {old:,.0f} | {saved_old} | {new:,.0f} | {saved_new} |")
    rows.append("")
    return "\n".join(rows)


def _export_section(settings: Any, exported: list[dict[str, Any]]) -> str:
    rows = [
        "## 3. Export throughput",
        "",
        f"`bench/export.py`. A client process submits {settings.events:,} pre-built varied events to the "
        "processor's own delivery worker (default `batch_size` 100, one request in flight) and flushes; "
        f"median of {settings.export_repeats}. The receiver runs in another process (its CPU read from "
        "/proc). "
        "*Client CPU* is the whole client process (submit + batching + encoding + HTTP), *submit* the part "
        "spent in `submit()` on the producing thread.",
        "",
        "| configuration | events/s (wall) | client CPU ms / 1,000 | = events/s per client core "
        "| of which submit | "
        "receiver CPU ms / 1,000 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in exported:
        rows.append(
            f"| {r['label']} | {r['events_per_s']:,.0f} | {r['cpu_ms_per_1k']:.1f} | "
            f"{1e6 / r['cpu_ms_per_1k']:,.0f} | "
            f"{r['submit_cpu_ms_per_1k']:.1f} | {r['receiver_cpu_ms_per_1k']:.1f} |"
        )
    rows += [
        "",
        "*proxies* and *timestamps* are delivery-thread candidates from `bench/fastpath.py` (resolve the "
        "environment's proxy and CA settings once per session instead of on every POST; format each distinct "
        "second of `ts` once).",
        "",
    ]
    return "\n".join(rows)


def _memory_section(settings: Any, held: dict[str, dict[str, Any]]) -> str:
    mib = 2**20
    rows = [
        "## 4. Memory through an ingest outage",
        "",
        f"`bench/memory.py`. FastAPI under beacon-otel as `opentelemetry-instrument` sets it up, "
        f"{settings.rate:,} requests/s for {settings.memory_seconds:.0f} s, the ingest URL a loopback port "
        "where nothing listens. Both set-ups ran at once, each in its own process. *Plateau* is the median "
        "over the second half; *drift* the RSS change across it. *Per 10k* = (plateau - baseline RSS) / "
        "(events gained "
        "in the buffer) x 10,000.",
        "",
        "| set-up | baseline RSS | plateau RSS | peak RSS | drift | most events held | dropped | spooled | "
        "per 10k events |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, s in held.items():
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(s["dropped"].items())) or "none"
        per_10k = f"{s['per_10k'] / mib:.2f} MiB" if s["per_10k"] else "n/a"
        rows.append(
            f"| {name} | {s['baseline_rss'] / mib:.1f} MiB | {s['plateau_rss'] / mib:.1f} MiB | "
            f"{s['peak_rss'] / mib:.1f} MiB | {s['drift_per_min'] / mib:+.2f} MiB/min | "
            f"{s['max_buffered']:,} | "
            f"{dropped} | {s['spooled']:,} | {per_10k} |"
        )
    rows += ["", "RSS (MiB) and events held, every 10 s:", ""]
    names = list(held)
    rows.append("| t (s) | " + " | ".join(f"{n}: RSS, held" for n in names) + " |")
    rows.append("|---:|" + "---:|" * len(names))
    timelines = [held[n]["timeline"] for n in names]
    for index, point in enumerate(timelines[0]):
        t = point[0]
        if index and int(t) % 10 and index != len(timelines[0]) - 1:
            continue
        cells = []
        for timeline in timelines:
            match = timeline[min(index, len(timeline) - 1)]
            cells.append(f"{match[1] / mib:.1f}, {match[2]:,}")
        rows.append(f"| {t:.0f} | " + " | ".join(cells) + " |")
    rows.append("")
    return "\n".join(rows)
