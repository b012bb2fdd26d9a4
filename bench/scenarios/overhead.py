"""Per-request overhead in process: the same app, bare and under each way of observing it.

Instrumentation is process-global, so each variant lives in its own worker process
(``python -m bench.scenarios.overhead worker VARIANT``), set up once and warmed up, then driven over a
pipe: ``run N`` serves N requests and answers the wall time of the loop and the process CPU
time (every thread) up to the end of a flush, so that background delivery is paid for too.
The driver runs the variants round-robin, rotating the order each round, so drift (thermal,
neighbours, the garbage collector's phase) hits them all alike, and reports medians.

Everything is delivered over loopback to servers in other processes: the strict dev ingest
for Beacon events (beacon-otel and beaconhq), the accept-anything sink for OTLP.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import apps, instructions, services

INGEST_KEY = "bench-ingest-key"


@dataclass(frozen=True)
class Variant:
    """One way of running the app; ``setup`` runs inside the worker process."""

    key: str
    framework: str  # "fastapi" or "flask"
    label: str
    setup: Callable[[str, str], Harness]


@dataclass
class Harness:
    """What a worker needs: the app, and how to push out everything buffered."""

    app: Any
    flush: Callable[[], None]


# -- set-ups (each runs in a fresh worker process) --------------------------------------------


def _build(framework: str) -> Any:
    return apps.fastapi_app() if framework == "fastapi" else apps.flask_app()


def bare(framework: str) -> Callable[[str, str], Harness]:
    def setup(ingest: str, sink: str) -> Harness:
        return Harness(_build(framework), flush=lambda: None)

    return setup


def beaconhq(framework: str) -> Callable[[str, str], Harness]:
    """beaconhq 0.2.0's own middleware, wired as its docstrings say, shipping to the dev ingest."""

    def setup(ingest: str, sink: str) -> Harness:
        from beaconhq import BeaconClient

        client = BeaconClient(ingest_key=INGEST_KEY, ingest_url=ingest)
        app = _build(framework)
        if framework == "fastapi":
            from beaconhq.integrations.asgi import (
                BeaconASGIMiddleware,
                enable_fastapi_validation_capture,
            )

            app.add_middleware(BeaconASGIMiddleware, client=client, consumer_header="x-api-key")
            enable_fastapi_validation_capture(app)
        else:
            from beaconhq.integrations.flask import init_flask

            init_flask(app, client, consumer_header="X-API-Key")

        def flush() -> None:
            # flush() returns at once while an eager flush (its own thread) is sending.
            while client._buffer or client._flush_lock.locked():
                client.flush()
                time.sleep(0.001)

        return Harness(app, flush=flush)

    return setup


def stock_otlp(framework: str) -> Callable[[str, str], Harness]:
    """What an OpenTelemetry user already pays: the instrumentor, a BatchSpanProcessor, OTLP/HTTP."""

    def setup(ingest: str, sink: str) -> Harness:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces")))
        trace.set_tracer_provider(provider)
        app = _build(framework)
        if framework == "fastapi":
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
        else:
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
        return Harness(app, flush=provider.force_flush)

    return setup


def autorun(
    framework: str,
    *,
    beacon: bool,
    otlp: bool,
    meters_off: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Callable[[str, str], Harness]:
    """Exactly what ``opentelemetry-instrument`` does, in process: its ``initialize()``.

    The distro, configurator and pre-instrument hook are found through their entry points
    as they are under the real command, with the environment it would be given. With Beacon
    on, that includes the distro's defaults (``src/beacon_otel/autorun.py``): no ASGI
    send/receive spans when no trace exporter is configured, no ``MeterProvider`` when no
    metrics exporter is; with Beacon off the distro leaves the SDK's defaults alone.
    ``meters_off`` gives a Beacon-off run the distro's meter default anyway, so that the
    difference between it and Beacon + OTLP is Beacon's own work and nothing else. With Beacon on
    and no exporter, Flask's SERVER spans come from beacon-otel's lean span source unless
    ``extra_env`` says ``BEACON_SERVER_SPANS=stock``.
    """

    def setup(ingest: str, sink: str) -> Harness:
        provider = install_autorun(
            ingest, sink, beacon=beacon, otlp=otlp, meters_off=meters_off, extra_env=extra_env
        )
        return Harness(_build(framework), flush=provider.force_flush)

    return setup


def install_autorun(
    ingest: str,
    sink: str,
    *,
    beacon: bool,
    otlp: bool,
    meters_off: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """Run ``opentelemetry-instrument``'s ``initialize()`` in this process; the tracer provider."""
    env = {
        "OTEL_SERVICE_NAME": "bench",
        "BEACON_INGEST_KEY": INGEST_KEY,
        "BEACON_INGEST_URL": ingest,
        "BEACON_STORAGE_PATH": tempfile.mkdtemp(prefix="bench-spool-"),
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **(extra_env or {}),
    }
    if not beacon:
        env["BEACON_ENABLED"] = "false"
    if otlp:
        env["OTEL_TRACES_EXPORTER"] = "otlp"
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{sink}/v1/traces"
    os.environ.update(env)
    from opentelemetry import trace
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    if meters_off:
        _install_no_unread_meters()
    initialize(swallow_exceptions=False)
    return trace.get_tracer_provider()


def _install_no_unread_meters() -> None:
    """Make the SDK configurator install no ``MeterProvider``, as the distro does with Beacon on."""
    from opentelemetry.sdk import _configuration
    from opentelemetry.sdk.metrics._internal import _disable_meter_configurator

    _configuration._import_meter_configurator = lambda name: _disable_meter_configurator  # type: ignore[assignment]


def _variants() -> list[Variant]:
    found: list[Variant] = []
    for framework in ("fastapi", "flask"):
        found += [
            Variant(f"{framework}/bare", framework, "bare app (floor)", bare(framework)),
            Variant(f"{framework}/beaconhq", framework, "beaconhq 0.2.0 middleware", beaconhq(framework)),
            Variant(
                f"{framework}/otlp",
                framework,
                "stock OTel + BatchSpanProcessor + OTLP/HTTP",
                stock_otlp(framework),
            ),
            Variant(
                f"{framework}/instrumented",
                framework,
                "OTel instrumentation alone under opentelemetry-instrument (no exporter, Beacon off)",
                autorun(framework, beacon=False, otlp=False),
            ),
            Variant(
                f"{framework}/otlp-autorun",
                framework,
                "OTLP/HTTP under opentelemetry-instrument (Beacon off)",
                autorun(framework, beacon=False, otlp=True),
            ),
            Variant(
                f"{framework}/otlp-autorun-same-defaults",
                framework,
                "OTLP/HTTP under opentelemetry-instrument (Beacon off, no unread meters as with Beacon on)",
                autorun(framework, beacon=False, otlp=True, meters_off=True),
            ),
            Variant(
                f"{framework}/beacon",
                framework,
                "beacon-otel under opentelemetry-instrument",
                autorun(framework, beacon=True, otlp=False),
            ),
            *(
                [
                    Variant(
                        "flask/beacon-stock",
                        framework,
                        "beacon-otel under opentelemetry-instrument, stock Flask instrumentation "
                        "(BEACON_SERVER_SPANS=stock)",
                        autorun(
                            framework, beacon=True, otlp=False, extra_env={"BEACON_SERVER_SPANS": "stock"}
                        ),
                    )
                ]
                if framework == "flask"
                else []
            ),
            Variant(
                f"{framework}/beacon+otlp",
                framework,
                "beacon-otel + OTLP/HTTP under opentelemetry-instrument",
                autorun(framework, beacon=True, otlp=True),
            ),
        ]
    return found


VARIANTS = {variant.key: variant for variant in _variants()}


# -- the worker --------------------------------------------------------------------------------


def worker(key: str, ingest: str, sink: str) -> None:
    """Serve ``run N`` / ``quit`` commands on stdin; answer JSON lines on the original stdout."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    variant = VARIANTS[key]
    harness = variant.setup(ingest, sink)
    driver = apps.driver_for(variant.framework, harness.app)
    served = 0
    answers.write(json.dumps({"ready": key}) + "\n")
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "census":
            answers.write(json.dumps(census(driver, harness, served)) + "\n")
            continue
        n = int(command[1])
        collections = [generation["collections"] for generation in gc.get_stats()]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        driver.run(n, served)
        wall = time.perf_counter() - wall0
        harness.flush()
        cpu = time.process_time() - cpu0
        served += n
        gcs = [g["collections"] - c for g, c in zip(gc.get_stats(), collections, strict=True)]
        answers.write(json.dumps({"wall": wall, "cpu": cpu, "not_ok": driver.not_ok, "gc": gcs}) + "\n")
    harness.flush()


CENSUS_REQUESTS = 200


def _package_of(filename: str) -> str:
    """``opentelemetry/instrumentation/asgi`` for a file of that package; ``builtins`` for C code."""
    if "site-packages/" in filename:
        parts = filename.split("site-packages/", 1)[1].split("/")
        return "/".join(parts[:3] if parts[0] == "opentelemetry" else parts[:1]).removesuffix(".py")
    if "/src/beacon_otel/" in filename:
        return "beacon_otel/" + filename.rsplit("/", 1)[1].removesuffix(".py")
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib: " + filename.rsplit("/", 1)[1].removesuffix(".py")


def census(driver: Any, harness: Harness, served: int) -> dict[str, Any]:
    """What one request does, after the timed rounds: Python calls, spans by scope and kind.

    First ``CENSUS_REQUESTS`` requests under ``cProfile``: function calls per request, in all
    and by package (counts, not times: the same on a loaded machine). Then a counting span processor is added to the SDK provider for ``CENSUS_REQUESTS`` requests
    (after the timing, so it never weighs on it), and the metric instruments the global
    meter provider holds are counted. Answers per-request averages.
    """
    import cProfile
    import pstats

    from opentelemetry import metrics, trace

    # Python function calls per request: deterministic, whatever the machine's load.
    profile = cProfile.Profile()
    profile.enable()
    driver.run(CENSUS_REQUESTS, served)
    profile.disable()
    harness.flush()
    served += CENSUS_REQUESTS
    stats = pstats.Stats(profile)
    by_module: dict[str, float] = {}
    for (filename, _, _), (_, calls, *_) in stats.stats.items():  # type: ignore[attr-defined]
        by_module[_package_of(filename)] = by_module.get(_package_of(filename), 0) + calls / CENSUS_REQUESTS
    spans: dict[str, int] = {}
    provider = trace.get_tracer_provider()
    add = getattr(provider, "add_span_processor", None)
    if add is not None:
        from opentelemetry.sdk.trace import SpanProcessor

        class Count(SpanProcessor):
            def on_end(self, span: Any) -> None:
                scope = span.instrumentation_scope.name if span.instrumentation_scope else "?"
                key = f"{scope} {span.kind.name}"
                spans[key] = spans.get(key, 0) + 1

        add(Count())
    driver.run(CENSUS_REQUESTS, served)
    harness.flush()
    meter_provider = metrics.get_meter_provider()
    meters = getattr(meter_provider, "_meters", None)
    instruments = 0
    if isinstance(meters, dict):  # the SDK's MeterProvider (the proxy keeps a list of its own)
        for meter in meters.values():
            instruments += len(getattr(meter, "_instrument_id_instrument", {}) or {})
    return {
        "python_calls_per_request": stats.total_calls / CENSUS_REQUESTS,  # type: ignore[attr-defined]
        "calls_by_package": {
            k: round(v, 1) for k, v in sorted(by_module.items(), key=lambda kv: -kv[1])[:12]
        },
        "spans_per_request": {k: v / CENSUS_REQUESTS for k, v in sorted(spans.items())},
        "meter_provider": type(meter_provider).__name__,
        "instruments": instruments,
    }


class WorkerProcess:
    """The driver's end of one worker."""

    def __init__(self, key: str, ingest: str, sink: str) -> None:
        self.key = key
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.overhead", "worker", key, ingest, sink],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ready(self) -> None:
        answer = self._read()
        if answer.get("ready") != self.key:
            raise RuntimeError(f"worker {self.key} did not start: {answer}")

    def run(self, n: int) -> dict[str, Any]:
        return self.ask(f"run {n}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.key} exited (status {self.process.wait()})")
        return json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the driver --------------------------------------------------------------------------------


def _counters(ingest: services.Service, sink: services.Service) -> dict[str, int]:
    stats, received = ingest.get("/v1/stats"), sink.get("/")
    return {
        "beacon_events": stats["events_accepted"],
        "beacon_batches_rejected": stats["batches_rejected"],
        "spans": received["spans"],
        "server_spans": received["server_spans"],
    }


def measure(keys: list[str], *, rounds: int, requests: int, warmup: int, log=print) -> list[dict[str, Any]]:
    """Run every variant ``rounds`` times ``requests`` requests, interleaved; then a census of each.

    One dict per variant: its key, framework and label, us per request per round (wall and
    CPU), garbage collections per 1,000 requests per generation per round, what the servers
    received, and the census (spans per request by instrumentation scope and kind).
    """
    with services.running(services.dev_ingest(), services.sink()) as (ingest, sink):
        workers = [WorkerProcess(key, ingest.base_url, sink.base_url) for key in keys]
        try:
            for worker_process in workers:
                worker_process.ready()
            for worker_process in workers:
                worker_process.run(warmup)
            outcomes = {
                w.key: {
                    "key": w.key,
                    "framework": VARIANTS[w.key].framework,
                    "label": VARIANTS[w.key].label,
                    "wall_us": [],
                    "cpu_us": [],
                    "gc_per_1k": [],
                    "delivered": {},
                    "not_ok": 0,
                }
                for w in workers
            }
            for round_index in range(rounds):
                shift = round_index % len(workers)
                for worker_process in workers[shift:] + workers[:shift]:
                    before = _counters(ingest, sink)
                    answer = worker_process.run(requests)
                    after = _counters(ingest, sink)
                    outcome = outcomes[worker_process.key]
                    outcome["wall_us"].append(answer["wall"] / requests * 1e6)
                    outcome["cpu_us"].append(answer["cpu"] / requests * 1e6)
                    outcome["gc_per_1k"].append([c * 1000 / requests for c in answer["gc"]])
                    outcome["not_ok"] = answer["not_ok"]
                    for name, value in after.items():
                        outcome["delivered"][name] = outcome["delivered"].get(name, 0) + value - before[name]
                log(
                    f"  round {round_index + 1}/{rounds}: "
                    + ", ".join(f"{k} {outcomes[k]['wall_us'][-1]:.0f}" for k in keys)
                    + " us/request"
                )
            for worker_process in workers:
                outcomes[worker_process.key]["census"] = worker_process.ask("census")
        finally:
            for worker_process in workers:
                worker_process.stop()
    return [outcomes[key] for key in keys]


def count(key: str, ingest: str, sink: str, n: int, warmup: int = 100) -> None:
    """Under callgrind (``bench.harness.instructions``): warm up, then count ``n`` requests of ``key``."""
    variant = VARIANTS[key]
    harness = variant.setup(ingest, sink)
    driver = apps.driver_for(variant.framework, harness.app)
    instructions.start()
    driver.run(warmup)
    harness.flush()
    # The collector's counters start the counted requests from the same state in every run:
    # otherwise a full collection falls inside or outside them by chance (up to 10,000
    # instructions per request over 200 requests).
    gc.collect()
    instructions.measured(lambda requests: driver.run(requests, warmup), n)
    harness.flush()
    print(json.dumps({"key": key, "n": n, "not_ok": driver.not_ok}))


def count_one(key: str, n: int, ingest: str, sink: str) -> float:
    """Instructions per request on the request thread for the variant ``key``."""
    totals, answer = instructions.run_module("bench.scenarios.overhead", ["count", key, ingest, sink, str(n)])
    if answer["not_ok"] or len(totals) != 1:
        raise RuntimeError(f"counting {key}: {answer}, {len(totals)} profiles")
    return totals[0] / n


def main(argv: list[str]) -> None:
    if argv[:1] == ["worker"]:
        worker(*argv[1:4])
        return
    if argv[:1] == ["count"]:
        count(argv[1], argv[2], argv[3], int(argv[4]))
        return
    keys = argv or list(VARIANTS)
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    for outcome in measure(keys, rounds=rounds, requests=2000, warmup=500):
        print(
            f"{outcome['key']:28} wall {statistics.median(outcome['wall_us']):8.1f} us  "
            f"cpu {statistics.median(outcome['cpu_us']):8.1f} us  {outcome['delivered']} "
            f"census={outcome['census']}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
