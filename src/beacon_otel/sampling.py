"""Sampling that keeps every request countable: a wrapper around the user's sampler.

A sampled-out span is a ``NonRecordingSpan`` that no processor ever sees, so trace sampling
would silently thin out request analytics. ``BeaconSampler`` turns the delegate's DROP into
RECORD_ONLY for SERVER spans only: the span is recorded and reaches ``on_end``, but its
sampled flag stays off, so every exporting processor skips it and every child span
(``ParentBased`` sees the unsampled parent) stays dropped. Exported traces are exactly those
the delegate chose.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class BeaconSampler(Sampler):
    """Records SERVER spans the delegate drops (unsampled, never exported); delegates the rest.

    Use it around whatever sampler the provider would otherwise have, e.g.
    ``TracerProvider(sampler=BeaconSampler(ParentBased(TraceIdRatioBased(0.1))))``.
    """

    def __init__(self, delegate: Sampler) -> None:
        if not isinstance(delegate, Sampler):
            raise TypeError(f"Expected delegate to be an OpenTelemetry Sampler, got {delegate!r}")
        self.delegate = delegate

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


def _parent_trace_state(parent_context: Context | None) -> TraceState | None:
    span_context = get_current_span(parent_context).get_span_context()
    return span_context.trace_state if span_context.is_valid else None
