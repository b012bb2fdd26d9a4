"""BeaconSampler: every request reaches the processors, exporters keep the user's sampling."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import context as otel_context
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
    """Under ParentBased(ALWAYS_ON) the wrapper is never called for a sampled trace.

    The SDK calls ``sampler.should_sample`` for every span: a span without a parent is answered
    as ALWAYS_ON answers it, and a span with one goes to ParentBased's own method, whose branch
    for a sampled trace is ALWAYS_ON itself. A plain ALWAYS_ON is its own too.
    """
    sampler = BeaconSampler(ParentBased(ALWAYS_ON))
    decide = sampler.should_sample
    assert not hasattr(decide, "__self__")  # a function of its own, not a BeaconSampler method
    parent_based = next(
        cell.cell_contents
        for cell in decide.__closure__ or ()  # type: ignore[attr-defined]
        if getattr(cell.cell_contents, "__self__", None) is not None
    ).__self__
    assert type(parent_based) is ParentBased
    assert parent_based._root is ALWAYS_ON
    assert parent_based._local_parent_sampled is ALWAYS_ON
    assert isinstance(parent_based._remote_parent_not_sampled, BeaconSampler)
    assert BeaconSampler(ALWAYS_ON).should_sample == ALWAYS_ON.should_sample
    assert sampler.delegate.get_description() in sampler.get_description()


def _current(parent: str) -> Context:
    """A context for ``parent``: ``"none"`` and ``"empty"`` have no span; ``"invalid"`` the invalid one."""
    if parent == "none":
        return Context({"some other key": 1})
    if parent == "empty":
        return Context()
    if parent == "invalid":
        return trace.set_span_in_context(trace.INVALID_SPAN, Context())
    context = _parent(parent)
    assert context is not None
    return context


@pytest.mark.parametrize(
    "parent",
    ["none", "empty", "invalid", "remote sampled", "remote unsampled", "local sampled", "local unsampled"],
)
@pytest.mark.parametrize("passed", [True, False], ids=["context passed", "current context"])
@pytest.mark.parametrize("attributes", [SERVER_ATTRIBUTES, None, {}])
@pytest.mark.parametrize("kind", [SpanKind.SERVER, SpanKind.INTERNAL])
def test_the_default_sampler_decides_as_when_wrapped_whole(
    parent: str, passed: bool, attributes: Attributes, kind: SpanKind
) -> None:
    """BeaconSampler(ParentBased(ALWAYS_ON)) answers every span as the wrapper around all of it does.

    With or without a parent span, given the context or finding it current: same decision, same
    attributes, same trace state.
    """
    context = _current(parent)
    token = None if passed else otel_context.attach(context)
    try:
        given = context if passed else None
        ours = BeaconSampler(ParentBased(ALWAYS_ON)).should_sample(given, 7, "GET /", kind, attributes)
        whole = BeaconSampler(SubclassedParentBased(ALWAYS_ON)).should_sample(
            given, 7, "GET /", kind, attributes
        )
    finally:
        if token is not None:
            otel_context.detach(token)
    assert ours.decision is whole.decision
    assert dict(ours.attributes) == dict(whole.attributes)
    assert ours.trace_state == whole.trace_state


def test_a_root_span_of_the_default_sampler_is_recorded_with_its_start_attributes() -> None:
    """A span without a parent, under the default sampler: sampled, exported, its start attributes kept.

    The start attributes are copied into the span: changing the mapping passed afterwards
    changes nothing on the span.
    """
    provider, seen, exported = make_provider(BeaconSampler(ParentBased(ALWAYS_ON)))
    attributes = dict(SERVER_ATTRIBUTES)
    span = provider.get_tracer("t").start_span("GET", Context(), SpanKind.SERVER, attributes)
    attributes["http.route"] = "/changed"
    span.end()
    assert span.get_span_context().trace_flags.sampled
    assert [dict(s.attributes or {}) for s in seen.spans] == [SERVER_ATTRIBUTES]
    assert [s.name for s in exported.get_finished_spans()] == ["GET"]
