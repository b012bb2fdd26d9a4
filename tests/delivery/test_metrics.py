"""Self-metrics read from an InMemoryMetricReader, in a fresh process (the global MeterProvider is
set once per process, and the processor is built before it, as under opentelemetry-instrument)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from beacon_otel import BeaconConfig, BeaconSpanProcessor
    from beacon_otel.devingest import DevIngest, Fault

    configure = sys.argv[1] == "with-provider"
    with DevIngest() as ingest:
        ingest.script([Fault(status=400)])  # the first batch is refused: lost in delivery
        processor = BeaconSpanProcessor(BeaconConfig(
            ingest_key="k", ingest_url=ingest.base_url, batch_size=2, flush_interval=0.05,
            max_storage_bytes=0))
        provider = TracerProvider()
        provider.add_span_processor(processor)
        reader = InMemoryMetricReader()
        if configure:  # set after the processor exists, as auto-run's configurator does
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        tracer = provider.get_tracer("app")
        for path in ("/a", "/b", "/c", "/d"):
            attributes = {"http.method": "GET", "http.route": path, "http.target": path}
            attributes["http.status_code"] = 200
            tracer.start_span("GET", kind=trace.SpanKind.SERVER, attributes=attributes).end()
            processor.force_flush(10_000)  # one batch per event: the first is refused
        found = {}
        data = reader.get_metrics_data() if configure else None
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = {"count": point.count, "sum": point.sum}
                        found.setdefault(metric.name, []).append([dict(point.attributes), value])
        provider_kind = type(metrics.get_meter_provider()).__name__
        snapshot = processor.stats.snapshot()
        print(json.dumps({"metrics": found, "snapshot": snapshot, "provider": provider_kind}))
        provider.shutdown()
    """
)


def run(mode: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


def points(found: dict[str, Any], name: str) -> dict[str | None, Any]:
    """A metric's values by error.type (None when there is none)."""
    return {attrs.get("error.type"): value for attrs, value in found["metrics"][name]}


def test_self_metrics_follow_the_processor_counters() -> None:
    """With a MeterProvider (set after the processor was built), Beacon reports its queue, events
    processed, exported and lost by error.type, and each ingest request's duration, named after the
    SDK's self-observability conventions with otel.component.type/name."""
    found = run("with-provider")
    assert points(found, "otel.sdk.processor.span.processed") == {None: 4}
    assert points(found, "otel.sdk.exporter.span.exported") == {None: 3, "rejected": 1}
    assert points(found, "otel.sdk.processor.span.queue.size") == {None: 0}
    assert points(found, "otel.sdk.processor.span.queue.capacity") == {None: 10_000}
    assert points(found, "beacon.exporter.span.spooled") == {None: 0}
    durations = points(found, "otel.sdk.exporter.operation.duration")
    assert durations[None]["count"] == 3 and durations["400"]["count"] == 1
    attributes = found["metrics"]["otel.sdk.exporter.span.exported"][0][0]
    assert attributes["otel.component.type"] == "beacon_ingest_exporter"
    assert attributes["otel.component.name"].startswith("beacon_ingest_exporter/")
    processed = found["metrics"]["otel.sdk.processor.span.processed"][0][0]
    assert processed["otel.component.type"] == "beacon_span_processor"


def test_no_meter_provider_no_metrics() -> None:
    """Without a MeterProvider the instruments stay the API's proxies (never collected) and delivery
    works as before."""
    found = run("without-provider")
    assert found["provider"] == "_ProxyMeterProvider"
    assert found["snapshot"]["sent"] == 3 and found["snapshot"]["dropped"] == {"rejected": 1}
