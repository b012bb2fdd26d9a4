"""Sampling that keeps every request countable: a wrapper around the user's sampler.

A sampled-out span is a ``NonRecordingSpan`` that no processor ever sees, so trace sampling
would silently thin out request analytics. ``BeaconSampler`` turns the delegate's DROP into
RECORD_ONLY for SERVER spans only: the span is recorded and reaches ``on_end``, but its
sampled flag stays off, so every exporting processor skips it and every child span
(``ParentBased`` sees the unsampled parent) stays dropped. Exported traces are exactly those
the delegate chose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from beacon_otel.common.spans import CURRENT_SPAN_KEY


class BeaconSampler(Sampler):
    """Records SERVER spans the delegate drops (unsampled, never exported); delegates the rest.

    Use it around whatever sampler the provider would otherwise have, e.g.
    ``TracerProvider(sampler=BeaconSampler(ParentBased(TraceIdRatioBased(0.1))))``.
    """

    def __init__(self, delegate: Sampler) -> None:
        if not isinstance(delegate, Sampler):
            raise TypeError(f"Expected delegate to be an OpenTelemetry Sampler, got {delegate!r}")
        self.delegate = delegate
        decide = _deciding_without_wrapper(delegate)
        if decide is not None:
            # The SDK calls ``sampler.should_sample`` for every span: this instance attribute
            # makes that call go straight to a sampler making the same decisions, with this
            # wrapper only where a decision can drop (see _deciding_without_wrapper).
            self.should_sample = decide  # type: ignore[method-assign]

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
        """The delegate's decision, except that a dropped SERVER span is recorded unsampled."""
        result = self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not Decision.DROP or kind is not SpanKind.SERVER:
            return result
        # Samplers discard the start attributes on DROP, but the route, method and path the
        # instrumentation passed at start are what the request event is made of.
        kept = dict(attributes or {})
        kept.update(result.attributes or {})
        return SamplingResult(
            Decision.RECORD_ONLY, kept, result.trace_state or _parent_trace_state(parent_context)
        )

    def get_description(self) -> str:
        """Names the delegate and says which of its decisions this sampler changes."""
        return (
            f"BeaconSampler{{delegate={self.delegate.get_description()},"
            "dropped SERVER spans recorded unsampled}"
        )


_PARENT_BASED_BRANCHES = (
    "root",
    "remote_parent_sampled",
    "remote_parent_not_sampled",
    "local_parent_sampled",
    "local_parent_not_sampled",
)


def _deciding_without_wrapper(delegate: Sampler) -> Callable[..., SamplingResult] | None:
    """A ``should_sample`` deciding as ``BeaconSampler(delegate)`` does, without a call per span.

    ALWAYS_ON never drops: its own ``should_sample``. ``ParentBased`` (the SDK's default,
    ``ParentBased(ALWAYS_ON)``) picks one branch per span: the same ``ParentBased`` with
    ``BeaconSampler`` around each branch that can drop, so the spans of sampled traces (nearly
    all of them under the default) are decided exactly as without Beacon. ``None`` for any
    other sampler: it is wrapped as a whole.
    """
    if delegate is ALWAYS_ON:
        return delegate.should_sample
    if type(delegate) is not ParentBased:  # a subclass may decide otherwise: wrap it whole
        return None
    branches = {name: getattr(delegate, f"_{name}", None) for name in _PARENT_BASED_BRANCHES}
    if not all(isinstance(branch, Sampler) for branch in branches.values()):
        return None  # the SDK's private layout changed: wrap it whole
    kept = {
        name: branch if branch is ALWAYS_ON else BeaconSampler(branch)  # type: ignore[arg-type]
        for name, branch in branches.items()
    }
    decide = ParentBased(**kept).should_sample
    return _root_always_on(decide) if kept["root"] is ALWAYS_ON else decide


def _root_always_on(decide: Callable[..., SamplingResult]) -> Callable[..., SamplingResult]:
    """``decide`` (a ``ParentBased`` whose root is ALWAYS_ON), answering a span without a parent itself.

    Most server spans have no parent: a request that names no trace context. ParentBased then
    asks ALWAYS_ON, which samples it with no trace state, after looking the parent up three
    times through as many calls (about 7,000 instructions a span). The answer is the same
    (:class:`_SampledRoot`); any span with something in its context's span slot goes to ``decide``.
    """
    key = CURRENT_SPAN_KEY
    new = object.__new__

    def should_sample(
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        context = parent_context if parent_context is not None else get_current()
        if context.get(key) is None:  # get_current_span() would answer INVALID_SPAN: the root branch
            result = new(_SampledRoot)  # its __init__, without the call
            result.attributes = attributes if attributes is not None else _NO_ATTRIBUTES  # type: ignore[assignment]
            return result
        return decide(parent_context, trace_id, name, kind, attributes, links, trace_state)

    return should_sample


_NO_ATTRIBUTES: MappingProxyType[str, Any] = MappingProxyType({})


class _SampledRoot(SamplingResult):
    """ALWAYS_ON's decision on a span without a parent: sampled, no trace state, its start attributes.

    The attributes are the mapping the tracer passed, not ``SamplingResult``'s read-only view of
    it: the tracer copies them into the span at once, and that copy checks a view against
    ``collections.abc.Mapping`` the slow way, through ``__subclasscheck__``. Made without a call
    to ``__init__``, this saves about 4,000 instructions a span (measured on a Flask request).
    """

    decision = Decision.RECORD_AND_SAMPLE
    trace_state = None

    def __init__(self, attributes: Attributes = None) -> None:
        self.attributes = attributes if attributes is not None else _NO_ATTRIBUTES  # type: ignore[assignment]


def _parent_trace_state(parent_context: Context | None) -> TraceState | None:
    span_context = get_current_span(parent_context).get_span_context()
    return span_context.trace_state if span_context.is_valid else None
