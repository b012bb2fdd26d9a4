"""BeaconSampler: every request reaches the processors, exporters keep the user's sampling."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from beacon_otel.capture.sampling import BeaconSampler

SERVER_ATTRIBUTES = {"http.method": "GET", "http.route": "/users/{user_id}"}


class EndedSpans(SpanProcessor):
    """Collects every span that reaches on_end, sampled or not."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def make_provider(sampler: Sampler) -> tuple[TracerProvider, EndedSpans, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    seen = EndedSpans()
    exported = InMemorySpanExporter()
    provider.add_span_processor(seen)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider, seen, exported


def test_dropped_server_span_reaches_processors_but_not_exporters() -> None:
    """A SERVER span the delegate drops is recorded unsampled: on_end sees it, no exporter does."""
    provider, seen, exported = make_provider(BeaconSampler(ParentBased(TraceIdRatioBased(0.0))))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /users", kind=SpanKind.SERVER) as span:
        assert span.is_recording()
        assert not span.get_span_context().trace_flags.sampled
    assert [s.name for s in seen.spans] == ["GET /users"]
    assert exported.get_finished_spans() == ()


def test_children_of_a_sampled_out_request_stay_dropped() -> None:
    """ParentBased sees the unsampled flag, so the request's inner spans are not recorded."""
    provider, seen, _ = make_provider(BeaconSampler(ParentBased(TraceIdRatioBased(0.0))))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /users", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("http send", kind=SpanKind.INTERNAL) as child:
            assert not child.is_recording()
        with tracer.start_as_current_span("db", kind=SpanKind.CLIENT) as client:
            assert not client.is_recording()
    assert [s.name for s in seen.spans] == ["GET /users"]


def test_sampled_requests_are_exported_unchanged() -> None:
    """What the delegate samples is sampled and exported, children included."""
    provider, seen, exported = make_provider(BeaconSampler(ParentBased(ALWAYS_ON)))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("GET /users", kind=SpanKind.SERVER),
        tracer.start_as_current_span("http send"),
    ):
        pass
    assert sorted(s.name for s in exported.get_finished_spans()) == ["GET /users", "http send"]
    assert all(s.context.trace_flags.sampled for s in seen.spans)


@pytest.mark.parametrize("kind", [SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.CONSUMER, None])
def test_non_server_drops_stay_dropped(kind: SpanKind | None) -> None:
    """Only SERVER spans are rescued: any other dropped span is as the delegate decided."""
    result = BeaconSampler(ALWAYS_OFF).should_sample(None, 1, "work", kind, {"a": 1})
    assert result.decision is Decision.DROP


def test_start_attributes_are_kept() -> None:
    """The start attributes (route, method) survive, although samplers discard them on DROP."""
    result = BeaconSampler(ALWAYS_OFF).should_sample(None, 1, "GET", SpanKind.SERVER, SERVER_ATTRIBUTES)
    assert result.decision is Decision.RECORD_ONLY
    assert dict(result.attributes) == SERVER_ATTRIBUTES


def test_start_attributes_reach_the_recorded_span() -> None:
    """The recorded span carries the attributes the instrumentation gave at start."""
    provider, seen, _ = make_provider(BeaconSampler(ALWAYS_OFF))
    span = provider.get_tracer("test").start_span("GET", kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES)
    span.end()
    assert dict(seen.spans[0].attributes or {}) == SERVER_ATTRIBUTES


def test_parent_trace_state_is_kept() -> None:
    """A sampled-out request keeps the trace state propagated from its remote parent."""
    state = TraceState([("vendor", "value")])
    parent = SpanContext(
        trace_id=7,
        span_id=9,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
        trace_state=state,
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent), Context())
    result = BeaconSampler(ParentBased(ALWAYS_ON)).should_sample(
        context, 7, "GET", SpanKind.SERVER, SERVER_ATTRIBUTES
    )
    assert result.decision is Decision.RECORD_ONLY
    assert result.trace_state == state


class ChattySampler(Sampler):
    """Drops everything but sets its own attributes and trace state on the way."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.DROP, {"sampler.rule": "r1"}, TraceState([("s", "1")]))

    def get_description(self) -> str:
        return "Chatty"


def test_delegate_attributes_and_trace_state_win() -> None:
    """What the delegate adds on DROP is kept on top of the start attributes."""
    result = BeaconSampler(ChattySampler()).should_sample(
        None, 1, "GET", SpanKind.SERVER, {"http.method": "GET"}
    )
    assert dict(result.attributes) == {"http.method": "GET", "sampler.rule": "r1"}
    assert result.trace_state == TraceState([("s", "1")])


def test_description_names_the_delegate_and_the_change() -> None:
    """get_description() says what is delegated and what this wrapper changes."""
    description = BeaconSampler(TraceIdRatioBased(0.25)).get_description()
    assert description.startswith("BeaconSampler{delegate=TraceIdRatioBased{0.25}")
    assert "dropped SERVER spans recorded unsampled" in description


def test_delegate_must_be_a_sampler() -> None:
    """A delegate that is not a Sampler is refused when the wrapper is built."""
    with pytest.raises(TypeError, match="Expected delegate"):
        BeaconSampler("traceidratio")  # type: ignore[arg-type]


class SubclassedParentBased(ParentBased):
    """A ParentBased subclass: BeaconSampler wraps it whole, the reference for the quick path."""


def _parent(kind: str) -> Context | None:
    if kind == "root":
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if kind.endswith(" sampled") else TraceFlags.DEFAULT)
    parent = SpanContext(
        trace_id=7,
        span_id=9,
        is_remote=kind.startswith("remote"),
        trace_flags=flags,
        trace_state=TraceState([("vendor", "v")]),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


@pytest.mark.parametrize("root", [ALWAYS_ON, ALWAYS_OFF, TraceIdRatioBased(0.0), TraceIdRatioBased(1.0)])
@pytest.mark.parametrize(
    "parent", ["root", "remote sampled", "remote unsampled", "local sampled", "local unsampled"]
)
@pytest.mark.parametrize("kind", [SpanKind.SERVER, SpanKind.INTERNAL])
def test_a_parent_based_sampler_decides_as_when_wrapped_whole(
    root: Sampler, parent: str, kind: SpanKind
) -> None:
    """ParentBased gets the wrapper on its branches only: every decision is the whole wrapper's."""
    context = _parent(parent)
    quick = BeaconSampler(ParentBased(root)).should_sample(context, 7, "GET", kind, SERVER_ATTRIBUTES)
    whole = BeaconSampler(SubclassedParentBased(root)).should_sample(
        context, 7, "GET", kind, SERVER_ATTRIBUTES
    )
    assert quick.decision is whole.decision
    assert dict(quick.attributes or {}) == dict(whole.attributes or {})
    assert quick.trace_state == whole.trace_state


def test_the_default_sampler_decides_sampled_spans_without_the_wrapper() -> None:
    """Under ParentBased(ALWAYS_ON) the SDK's own sampler decides: no wrapper call per span.

    The SDK calls ``sampler.should_sample`` for every span: that is ParentBased's own method,
    and the branch a sampled trace takes is ALWAYS_ON itself. A plain ALWAYS_ON is its own too.
    """
    sampler = BeaconSampler(ParentBased(ALWAYS_ON))
    decide = sampler.should_sample
    assert isinstance(decide.__self__, ParentBased) and not isinstance(decide.__self__, BeaconSampler)  # type: ignore[attr-defined]
    assert decide.__self__._root is ALWAYS_ON  # type: ignore[attr-defined]
    assert isinstance(decide.__self__._remote_parent_not_sampled, BeaconSampler)  # type: ignore[attr-defined]
    assert BeaconSampler(ALWAYS_ON).should_sample == ALWAYS_ON.should_sample
    assert sampler.delegate.get_description() in sampler.get_description()
