"""Cost per request as the app grows: 10, 100 and 1,000 routes, the first route and the last.

Each framework (FastAPI, Starlette, Flask, Django) under each way of observing it lives in
its own worker process (``python -m bench.scenarios.app_size worker FRAMEWORK VARIANT``), which builds
the three apps once (instrumentation is process-global, so every app of a worker is
observed the same way), warms each cell up, then serves ``run ROUTES POSITION N`` commands:
N requests to the first or last route of the app of ROUTES routes, answering the wall time
and the process CPU up to the end of a flush (delivery threads included). The driver
interleaves the workers cell by cell and round by round, and pairs each round with the bare
app's round of the same cell, so *above bare* is the observer's own cost at that size.

``python -m bench.scenarios.app_size count FRAMEWORK VARIANT N`` is the same worker counting
instructions instead (run under callgrind by ``bench.harness.instructions``): N requests per cell.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import apps, instructions, services
from bench.scenarios import overhead

SIZES = (10, 100, 1_000)
POSITIONS = ("first", "last")
VARIANTS = {
    "bare": "bare app",
    "beaconhq": "beaconhq 0.2.0 middleware",
    "stock": "stock OTel instrumentation + BatchSpanProcessor + OTLP/HTTP",
    "beacon": "beacon-otel under opentelemetry-instrument",
    "native": "beacon-otel with FastAPI's native telemetry (FastAPI instrumentor off)",
    "beacon-stock": "beacon-otel under opentelemetry-instrument, stock instrumentation (BEACON_SERVER_SPANS=stock)",
}
FRAMEWORK_VARIANTS = {
    framework: [v for v in VARIANTS if v != "beacon-stock" and (v != "native" or framework == "fastapi")]
    for framework in apps.FRAMEWORKS
}
"""The timed variants. ``beacon-stock`` is only counted (``bench.harness.counts``, Django): the
lean span source against the instrumentation it stands in for."""
COUNTED_CELLS = ((10, "last"), (1_000, "last"))
"""Cells whose instructions are counted: the ratio of the target, at both ends of the table."""


@dataclass
class Observed:
    """A worker's apps by size, how to select one, and how to push out what was buffered."""

    apps: dict[int, Any]
    select: Callable[[int], Any]
    flush: Callable[[], None]


def setup(framework: str, variant: str, ingest: str, sink: str, sizes: tuple[int, ...] = SIZES) -> Observed:
    """Install ``variant`` in this process, then build the apps of ``sizes``."""
    flush: Callable[[], None] = lambda: None  # noqa: E731
    wrap: Callable[[Any], Any] = lambda app: app  # noqa: E731
    middleware: list[str] = []
    settings: dict[str, Any] = {}
    if variant == "beaconhq":
        from beaconhq import BeaconClient

        client = BeaconClient(ingest_key=overhead.INGEST_KEY, ingest_url=ingest)
        wrap = functools.partial(_beaconhq, framework, client)
        middleware = ["beaconhq.integrations.django.BeaconDjangoMiddleware"]
        settings = {"BEACON_CLIENT": client, "BEACON_CONSUMER_HEADER": "X-API-Key"}

        def flush() -> None:
            while client._buffer or client._flush_lock.locked():
                client.flush()
                time.sleep(0.001)

    if framework == "django":
        apps.django_configure(middleware, **settings)
    if variant == "stock":
        provider = _stock_provider(sink)
        wrap = functools.partial(_stock, framework, provider)
        flush = provider.force_flush
    elif variant in ("beacon", "native", "beacon-stock"):
        extra = {
            "native": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi,starlette"},
            "beacon-stock": {"BEACON_SERVER_SPANS": "stock"},
        }.get(variant, {})
        provider = overhead.install_autorun(ingest, sink, beacon=True, otlp=False, extra_env=extra)
        flush = provider.force_flush
    built = {size: wrap(apps.sized_app(framework, size)) for size in sizes}
    if framework == "django":
        handler = apps.django_handler()

        def select(size: int) -> Any:
            apps.django_select(built[size])
            return handler

        return Observed(built, select, flush)
    return Observed(built, built.__getitem__, flush)


def _beaconhq(framework: str, client: Any, app: Any) -> Any:
    if framework in apps.ASGI_FRAMEWORKS:
        from beaconhq.integrations.asgi import BeaconASGIMiddleware

        app.add_middleware(BeaconASGIMiddleware, client=client, consumer_header="x-api-key")
    elif framework == "flask":
        from beaconhq.integrations.flask import init_flask

        init_flask(app, client, consumer_header="X-API-Key")
    return app


def _stock_provider(sink: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces")))
    return provider


def _stock(framework: str, provider: Any, app: Any) -> Any:
    if framework == "fastapi":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    elif framework == "starlette":
        from opentelemetry.instrumentation.starlette import StarletteInstrumentor

        StarletteInstrumentor.instrument_app(app, tracer_provider=provider)
    elif framework == "flask":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    else:  # Django: the instrumentor adds its middleware to the settings, once
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        if not DjangoInstrumentor().is_instrumented_by_opentelemetry:
            DjangoInstrumentor().instrument(tracer_provider=provider)
    return app


class Cells:
    """A driver per (size, position) over the worker's apps."""

    def __init__(
        self, framework: str, observed: Observed, cells: tuple[tuple[int, str], ...] | None = None
    ) -> None:
        self.observed = observed
        wanted = cells or tuple((size, position) for size in SIZES for position in POSITIONS)
        self.drivers = {
            (size, position): apps.driver_for(framework, observed.select(size)) for size, position in wanted
        }
        for (size, position), driver in self.drivers.items():
            index = 0 if position == "first" else size - 1
            driver.path = functools.partial(apps.route_path, index)

    def serve(self, size: int, position: str, n: int, start: int = 0) -> apps.AsgiDriver | apps.WsgiDriver:
        self.observed.select(size)
        driver = self.drivers[size, position]
        driver.run(n, start)
        return driver


def worker(framework: str, variant: str, ingest: str, sink: str, warmup: int) -> None:
    """Serve ``run SIZE POSITION N`` / ``quit`` on stdin; answer JSON lines on the original stdout."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    cells = Cells(framework, setup(framework, variant, ingest, sink))
    for size, position in cells.drivers:
        cells.serve(size, position, warmup)
    cells.observed.flush()
    served = warmup
    answers.write(json.dumps({"ready": f"{framework}/{variant}"}) + "\n")
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        size, position, n = int(command[1]), command[2], int(command[3])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        driver = cells.serve(size, position, n, served)
        wall = time.perf_counter() - wall0
        cells.observed.flush()
        cpu = time.process_time() - cpu0
        served += n
        answers.write(json.dumps({"wall": wall, "cpu": cpu, "not_ok": driver.not_ok}) + "\n")
    cells.observed.flush()


def count(framework: str, variant: str, ingest: str, sink: str, n: int) -> None:
    """Under callgrind: warm each counted cell up, then count ``n`` requests per cell, in order.

    FastAPI and Flask count the app of ``bench.scenarios.overhead`` (``/users/{n}``) too, last, as the
    cell ``users``: the same observer in the same process, so ``bench.scenarios.overhead`` need not
    start another callgrind run for its bare and beacon-otel rows.
    """
    sizes = tuple(sorted({size for size, _ in COUNTED_CELLS}))
    cells = Cells(framework, setup(framework, variant, ingest, sink, sizes), COUNTED_CELLS)
    names = [f"{size}/{position}" for size, position in COUNTED_CELLS]
    runs = []
    for size, position in COUNTED_CELLS:
        driver = cells.drivers[size, position]
        runs.append((functools.partial(cells.observed.select, size), driver.run))
    if framework in ("fastapi", "flask"):
        users = apps.driver_for(framework, apps.fastapi_app() if framework == "fastapi" else apps.flask_app())
        runs.append((lambda: None, users.run))
        names.append("users")
    instructions.start()
    for select, run in runs:
        select()
        run(30)
    cells.observed.flush()
    for select, run in runs:
        select()
        instructions.measured(run, n)
    cells.observed.flush()
    print(json.dumps({"cells": names, "n": n}))


# -- the driver --------------------------------------------------------------------------------


class _Worker:
    def __init__(self, framework: str, variant: str, ingest: str, sink: str, warmup: int) -> None:
        self.key = f"{framework}/{variant}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.app_size", "worker", framework, variant, ingest, sink, str(warmup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, command: str | None) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"routes worker {self.key} exited (status {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

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


def requests_for(size: int, quick: bool) -> int:
    """Requests per round in a cell: fewer where each costs more (the last of 1,000 routes)."""
    full = {10: 200, 100: 150, 1_000: 60}
    return max(20, full[size] // (3 if quick else 1))


def measure(
    *, rounds: int, quick: bool, warmup: int = 50, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every framework x variant x cell, interleaved; per cell the median us per request and above bare."""
    keys = [(f, v) for f in apps.FRAMEWORKS for v in FRAMEWORK_VARIANTS[f]]
    samples: dict[str, dict[str, list[dict[str, float]]]] = {f"{f}/{v}": {} for f, v in keys}
    delivered: dict[str, dict[str, int]] = {}
    with services.running(services.dev_ingest(), services.sink()) as (ingest, sink):
        workers = [_Worker(f, v, ingest.base_url, sink.base_url, warmup) for f, v in keys]
        try:
            for w in workers:
                if w.ask(None).get("ready") != w.key:
                    raise RuntimeError(f"routes worker {w.key} did not start")
            for round_index in range(rounds):
                shift = round_index % len(workers)
                for size in SIZES:
                    for position in POSITIONS:
                        n = requests_for(size, quick)
                        for w in workers[shift:] + workers[:shift]:
                            before = _received(ingest, sink)
                            answer = w.ask(f"run {size} {position} {n}")
                            after = _received(ingest, sink)
                            got = delivered.setdefault(w.key, {})
                            for name, value in after.items():
                                got[name] = got.get(name, 0) + value - before[name]
                            if answer["not_ok"]:
                                raise RuntimeError(f"{w.key}: {answer['not_ok']} responses were not 200")
                            cell = samples[w.key].setdefault(f"{size}/{position}", [])
                            cell.append({"wall": answer["wall"] / n * 1e6, "cpu": answer["cpu"] / n * 1e6})
                log(f"  routes: round {round_index + 1}/{rounds} done")
        finally:
            for w in workers:
                w.stop()
    return {"samples": samples, "delivered": delivered, "rounds": rounds}


def _received(ingest: services.Service, sink: services.Service) -> dict[str, int]:
    stats, received = ingest.get("/v1/stats"), sink.get("/")
    return {"beacon_events": stats["events_accepted"], "server_spans": received["server_spans"]}


def summarise(measured: dict[str, Any]) -> dict[str, Any]:
    """Per framework, variant and cell: median us/request and median paired overhead above bare."""
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    samples = measured["samples"]
    for key, cells in samples.items():
        framework, variant = key.split("/")
        bare = samples[f"{framework}/bare"]
        for cell, rounds in cells.items():
            row = {
                "us": statistics.median(r["wall"] for r in rounds),
                "cpu_us": statistics.median(r["cpu"] for r in rounds),
                "above": statistics.median(
                    r["wall"] - b["wall"] for r, b in zip(rounds, bare[cell], strict=True)
                ),
                "above_cpu": statistics.median(
                    r["cpu"] - b["cpu"] for r, b in zip(rounds, bare[cell], strict=True)
                ),
            }
            table.setdefault(framework, {}).setdefault(variant, {})[cell] = row
    return table


def main(argv: list[str]) -> None:
    if argv[:1] == ["worker"]:
        worker(argv[1], argv[2], argv[3], argv[4], int(argv[5]))
        return
    if argv[:1] == ["count"]:
        count(argv[1], argv[2], argv[3], argv[4], int(argv[5]))
        return
    table = summarise(measure(rounds=int(os.environ.get("BENCH_ROUNDS", "2")), quick=True))
    for framework, variants in table.items():
        for variant, cells in variants.items():
            print(framework, variant, {cell: round(row["above_cpu"], 1) for cell, row in cells.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
