"""Where OpenTelemetry keeps the current span in a context, read and written without its calls."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context

CURRENT_SPAN_KEY: str = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
"""The context key of the current span, as ``trace.set_span_in_context`` names it: the lean span
sources make a request's context with it, and the sampler looks for a parent under it, each
without the calls around it (the key has a generated suffix, so it is read off a context made
once)."""
