"""The span processor: finished SERVER spans become events handed to the delivery worker."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from beacon_otel.capture.off_loop import OffLoopResolution
from beacon_otel.common import guard
from beacon_otel.config.settings import DEFAULT_EXCLUDE_PATHS, DEFAULT_EXCLUDED_ENDINGS, BeaconConfig
from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.metrics import SelfMetrics
from beacon_otel.delivery.outbound import Outbound
from beacon_otel.delivery.stats import DeliveryError, DeliveryStats, Fate
from beacon_otel.frameworks.base import Hook
from beacon_otel.frameworks.settle import absorb_inner_span, is_inner_layer, settle
from beacon_otel.frameworks.table import hooks_for
from beacon_otel.mapping import span_view
from beacon_otel.mapping.facts import NO_FACTS
from beacon_otel.mapping.span_to_event import Unmappable, plain_event, span_to_event
from beacon_otel.mapping.span_view import SpanView
from beacon_otel.request.consumer import ConsumerRules
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry

logger = logging.getLogger("beacon_otel")

_SERVER = SpanKind.SERVER


def _call_on_error(callback: Callable[[DeliveryError], object] | None, error: DeliveryError) -> None:
    if callback is not None:
        # The user's callback: its failure is logged at DEBUG, never re-raised. The log lines
        # about delivery are the delivery log's, rate-limited there.
        with guard.contained("the on_error callback", user_code=True, level=logging.DEBUG):
            callback(error)


def kept_events(
    patterns: tuple[str, ...], stats: DeliveryStats
) -> Callable[[RequestEvent], RequestEvent | None] | None:
    """``event``, or ``None`` (counted as excluded) when ``exclude_paths`` matches its path.

    ``None`` when there are no patterns: nothing to call per request. One search over all the
    patterns joined, as one regular expression, costs about as much as a search over one.
    """
    if not patterns:
        return None
    search = re.compile("|".join(f"(?:{pattern})" for pattern in patterns)).search
    endings = excluded_endings(patterns)

    def kept(event: RequestEvent) -> RequestEvent | None:
        path = event.path
        if not path.endswith(endings) or search(path) is None:
            return event
        stats.record(Fate.EXCLUDED)  # not traffic, by the user's choice: counted, not a loss
        return None

    return kept


def excluded_endings(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """How every path ``patterns`` may exclude ends (``("",)``: any way at all).

    The default list only matches paths with a few endings: one C call rules out nearly every
    request, where the search costs about 4,000 instructions (measured on a Flask request).
    """
    return DEFAULT_EXCLUDED_ENDINGS if patterns == DEFAULT_EXCLUDE_PATHS else ("",)


class BeaconSpanProcessor(SpanProcessor):
    """Turns each finished HTTP SERVER span into one Beacon event; other spans pass untouched."""

    def __init__(self, config: BeaconConfig) -> None:
        self.config = config
        self.stats = DeliveryStats()
        rules = ConsumerRules(
            config.consumer_header, config.consumer_resolver, timeout=config.consumer_resolver_timeout
        )
        self.requests = RequestRegistry(rules, body_sent=self.body_sent)
        self._serving = self.requests.current
        self._off_loop = OffLoopResolution(rules, self._queue_event) if config.consumer_resolver else None
        self.self_metrics = SelfMetrics(self.stats, queue_size=self.buffered, capacity=config.max_buffer_size)
        self._report = functools.partial(_call_on_error, config.on_error)
        outbound = Outbound.build(
            config, stats=self.stats, report=self._report, timed=self.self_metrics.timed
        )
        self._worker, self.spool, self._dry_run_sink = outbound.worker, outbound.spool, outbound.dry_run_sink
        self._waiting = WaitingEvents(self.requests, self._submit)
        self._enabled = config.enabled
        self._shut_down = False
        self._error_detail, self._kept = config.error_detail, kept_events(config.exclude_paths, self.stats)
        self._excluded_endings = excluded_endings(config.exclude_paths)

    # -- SpanProcessor ---------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """A SERVER span starts a request, or one more layer of the current one (same event)."""
        if not self._enabled:
            return
        # Inline try, not ``guard.contained``: a context manager costs calls, for every span.
        try:
            kind = span_view.request_kind(span)
            if kind is _SERVER:
                self.requests.started(span)
            elif kind is not None:
                self._inner_layer_started(span)
        except Exception:
            guard.internal_error("noting a request span's start")

    def _inner_layer_started(self, span: Span) -> None:
        if is_inner_layer(span) and (outer := self.requests.serving()) is not None:
            self.requests.nest(span, outer)

    def on_end(self, span: ReadableSpan) -> None:
        """Map a finished SERVER span and queue its event; never raises, never waits."""
        if not self._enabled:
            return
        serving = self._serving.get()
        if serving is not None:
            context = serving[1]
            # A request whose span source handed its facts over: its event is made from them,
            # without reading the span, if they are plain (nearly every Flask and Django request).
            if (
                context.handed_over is not None
                and span.context is context.span_context
                and self._served(context)
            ):
                return
        try:
            view = span_view.read(span, _SERVER)  # None for any other kind: one call either way
        except Exception:
            self.stats.drop("internal_error")  # a span that cannot be read: it may have been a request
            guard.internal_error("reading a finished span")
            return
        if view is None:
            if self.requests.inner_layers:
                try:
                    self._waiting.inner_layer_ended(span_view.read(span))
                except Exception:
                    guard.internal_error("closing a request's inner layer")
            return
        # Mapped here, not on the delivery thread: a queued span keeps its request's objects
        # alive until the batch, and the collector then runs ~17 times as often, on request
        # threads, costing what the mapping would save them (bench/RESULTS.md, section 2).
        try:
            self._queue(view)
        except Exception:
            self.stats.drop("internal_error")  # counted before it is logged (or re-raised)
            guard.internal_error("queueing a request's event")

    def _queue(self, view: SpanView) -> None:
        span_id = view[0]
        if span_id is None:
            return  # not a span of the SDK's: it never started here
        if self.requests.inner_layers and self._waiting.inner_layer_ended(view):
            return
        context = self.requests.pop(span_id)
        if context is not None:
            if not settle(context, view):
                return  # excluded by the user: no span from the contrib instrumentation, no event from us
            if context.waiting:
                self._waiting.hold(context, view)  # until the body or the inner layer ends
                return
        if self._off_loop is not None and self._resolving_off_loop(view, context):
            return  # its event is queued when the resolver answers
        event = self.event_for(view, context)  # _submit(), inline: the usual request's path
        if event is not None:
            self._worker.submit(event)

    def _resolving_off_loop(self, span: SpanView, context: RequestContext | None) -> bool:
        """Under ASGI, the user's resolver runs off the event loop (``capture.off_loop``)."""
        if context is None or context.scope is None or context.resolved or self._off_loop is None:
            return False
        return self._off_loop.start(span, context)

    def _queue_event(self, span: SpanView, context: RequestContext) -> None:
        """The event of a request whose consumer was resolved off the loop; never raises."""
        try:
            event = self.event_for(span, context)
            if event is not None:
                self._worker.submit(event)
        except Exception:
            self.stats.drop("internal_error")
            guard.internal_error("queueing a request's event")

    def _served(self, context: RequestContext) -> bool:
        """Queue the event of a request whose span source handed its facts over, if they are plain.

        What the rest of ``on_end`` would make of the span, without reading it (about 28,000
        instructions less a Flask request). False when the facts are not plain
        (``mapping.span_to_event.plain_event``): the span is then read as any other. Never raises.
        """
        try:
            method, template, status, start_ns, end_ns = context.handed_over  # type: ignore[misc]
            if not context.resolved:
                context.consumer = self.requests.rules.from_environ(context.environ or {}, context.request)
                context.resolved = True
            event = plain_event(end_ns, method, template, context.path, status, start_ns, context.consumer)
            if event is None:
                return False
            self.requests.finish(context.span_id)
            # The exclusion's cheap test inline: the kept() call only for a path it may exclude.
            if (
                self._kept is None
                or not event.path.endswith(self._excluded_endings)
                or self._kept(event) is not None
            ):
                self._worker.submit(event)
        except Exception:
            self.stats.drop("internal_error")
            guard.internal_error("queueing a request's event")
            self.requests.finish(context.span_id)
        return True

    def body_sent(self, context: RequestContext) -> None:
        """A streamed body is done: the event of its already ended span can go now."""
        try:
            self._waiting.release(context)
        except Exception:
            self.stats.drop("internal_error")
            guard.internal_error("queueing a streamed request's event")

    def _submit(self, span: SpanView, context: RequestContext | None) -> None:
        if self._off_loop is not None and self._resolving_off_loop(span, context):
            return
        event = self.event_for(span, context)
        if event is not None:
            self._worker.submit(event)

    def event_for(self, span: SpanView | ReadableSpan, context: RequestContext | None) -> RequestEvent | None:
        """The event of a finished request; ``None`` (counted) when it cannot be a valid one."""
        try:
            facts = context.facts(self.requests.rules) if context is not None else NO_FACTS
            event = span_to_event(span, facts, self._error_detail)
        except Unmappable as exc:
            if exc.reason != "not_http":  # a gRPC or other non-HTTP server span is not ours
                self.stats.drop(f"unmappable_{exc.reason}")
            return None
        return event if self._kept is None else self._kept(event)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver what is buffered; True when everything went within the timeout."""
        return self._worker.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Flush within ``shutdown_timeout`` and stop; one line if anything was lost, one if
        batches wait in the spool."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._waiting.count > 0:
            # Requests whose streamed body the server never closed (or whose inner layer
            # never ended) by now: their events cannot be made, and are counted lost.
            self.stats.drop("unfinished_request", self._waiting.count)
        if self._off_loop is not None:
            # Requests whose resolver had not answered yet: their events cannot be made now.
            self.stats.drop("unfinished_request", self._off_loop.pending)
            self._off_loop.close()
        self._worker.shutdown()
        loss = self.stats.loss_summary()
        if loss is not None:
            logger.warning("beacon-otel: %s", loss)
        if self.spool is not None and self.stats.snapshot()["spooled"]:
            with guard.contained("counting the spool at shutdown"):
                if waiting := self.spool.pending():
                    logger.info(
                        "beacon-otel: %d batches wait in the spool at %s; they are sent when the "
                        "ingest answers, at the next start at the latest",
                        waiting,
                        self.spool.directory,
                    )

    # -- for users -------------------------------------------------------------------------

    def hooks(self, framework: str) -> dict[str, Hook]:
        """Hooks for a framework instrumentation, giving Beacon the consumer of each request.

        For example ``FastAPIInstrumentor.instrument_app(app, **processor.hooks("fastapi"))``.
        ``framework`` is one of asgi, fastapi, starlette, wsgi, flask, django.
        """
        return hooks_for(self.requests, framework)

    def dry_run_events(self) -> list[dict[str, Any]]:
        """Events "sent" so far in dry-run mode, exactly as they would have gone over the wire."""
        if self._dry_run_sink is None:
            raise RuntimeError("dry_run_events() needs BeaconConfig(dry_run=True)")
        return self._dry_run_sink.events()

    def clear_dry_run_events(self) -> None:
        """Forget the dry-run events collected so far."""
        if self._dry_run_sink is not None:
            self._dry_run_sink.clear()

    def buffered(self) -> int:
        """Events waiting to be delivered."""
        return self._worker.buffered()


class WaitingEvents:
    """Ended SERVER spans whose event waits for the request's real end.

    A streamed body goes on after its span ends, and a mounted app's inner span may end after the
    outer one (the contrib ASGI middleware ends it with the last body message, before the
    exception leaves the inner app): the event is made once the last of them is done.
    """

    def __init__(
        self, requests: RequestRegistry, submit: Callable[[SpanView, RequestContext | None], None]
    ) -> None:
        self._requests = requests
        self._submit = submit
        self.count = 0
        """Events waiting (approximate: no lock); counted lost at shutdown."""

    def hold(self, context: RequestContext, span: SpanView) -> None:
        """Keep the ended span of a request still sending its body or running an inner layer."""
        context.ended_span = span
        self.count += 1

    def inner_layer_ended(self, span: SpanView) -> bool:
        """Whether ``span`` was an inner layer of a request (a mounted app's own span).

        What it learned goes to the request's one event; the span itself makes none.
        """
        span_id = span[0]
        if span_id is None:
            return False
        outer = self._requests.pop_nested(span_id)
        if outer is None:
            return False
        outer.inner_open -= 1
        absorb_inner_span(outer, span)
        self.release(outer)
        return True

    def release(self, context: RequestContext) -> None:
        """Submit the held event once nothing of its request is still going on."""
        span = context.ended_span
        if span is not None and not context.waiting:
            context.ended_span = None
            self.count -= 1
            self._submit(span, context)
