"""The span processor: finished SERVER spans become events handed to the delivery worker."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from beacon_otel import guard
from beacon_otel.config import BeaconConfig
from beacon_otel.console import ConsoleEcho
from beacon_otel.consumer import ConsumerRules
from beacon_otel.delivery import Delivery
from beacon_otel.delivery_log import DeliveryLog, make_visible
from beacon_otel.endpoint import shown_url
from beacon_otel.event import RequestEvent
from beacon_otel.fastapi_support import (
    absorb_inner_span,
    absorb_native_telemetry,
    excluded_by_user,
    is_inner_layer,
    is_native_span,
)
from beacon_otel.hooks import Hook, RequestRegistry
from beacon_otel.mapping import Unmappable, span_to_event
from beacon_otel.metrics import SelfMetrics
from beacon_otel.request import NO_FACTS, RequestContext
from beacon_otel.spool import Spool, destination_fingerprint
from beacon_otel.spooling import SpoolPolicy
from beacon_otel.stats import DeliveryError, DeliveryStats
from beacon_otel.transport import IngestTransport, InMemoryTransport
from beacon_otel.worker import DeliveryWorker

logger = logging.getLogger("beacon_otel")

_SERVER = SpanKind.SERVER


class BeaconSpanProcessor(SpanProcessor):
    """Turns each finished HTTP SERVER span into one Beacon event; other spans pass untouched."""

    def __init__(self, config: BeaconConfig) -> None:
        self.config = config
        self.stats = DeliveryStats()
        self.requests = RequestRegistry(
            ConsumerRules(config.consumer_header, config.consumer_resolver), body_sent=self.body_sent
        )
        self._dry_run_sink = InMemoryTransport() if config.dry_run else None
        transport = self._dry_run_sink or IngestTransport(
            url=config.ingest_url,
            key=config.ingest_key,
            timeout=config.timeout,
            compression=config.compression,
            allow_private=config.allow_private_endpoints,
            extra_headers=config.extra_headers,
        )
        # Console mode and self-metrics: each wraps the transport, no cost per request.
        self.self_metrics = SelfMetrics(self)
        sender = self.self_metrics.timed(ConsoleEcho(transport) if config.dry_run else transport)
        log = DeliveryLog(
            url=shown_url(config.ingest_url),
            host=urlsplit(config.ingest_url).hostname or "the ingest",
            spool_path=None,
        )
        if config.enabled:
            # Before the spool is made: what it removes or refuses at start is logged too.
            make_visible(debug=config.debug)
        self.spool: Spool | None = None
        policy = None
        if config.spool_enabled and not config.dry_run:
            self.spool = Spool(
                config.spool_directory,
                destination=destination_fingerprint(config.ingest_url, config.ingest_key or ""),
                max_bytes=config.max_storage_bytes,
            )
            log.spool_path = str(self.spool.directory)
            policy = SpoolPolicy(self.spool, stats=self.stats, log=log)
        delivery = Delivery(sender, stats=self.stats, report=self._report, log=log, spool=policy)
        self._worker = DeliveryWorker(
            delivery,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval,
            max_buffer_size=config.max_buffer_size,
            shutdown_timeout=config.shutdown_timeout,
        )
        if config.enabled:
            if config.dry_run:
                logger.info("beacon-otel: dry run: nothing is sent")
            else:
                log.started()
        self._enabled = config.enabled
        self._shut_down = False
        self._held = 0
        """Events waiting for a streamed body's end or an inner layer (approximate: no lock)."""

    # -- SpanProcessor ---------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """A SERVER span starts a request, or one more layer of the current one (same event)."""
        if not self._enabled:
            return
        if span.kind is _SERVER:
            with guard.contained("noting a request span's start"):
                self.requests.started(span)
        elif is_inner_layer(span):
            with guard.contained("noting a request span's start"):
                self.requests.started_inner(span)

    def on_end(self, span: ReadableSpan) -> None:
        """Map a finished SERVER span and queue its event; never raises, never waits."""
        if not self._enabled:
            return
        span_context = span.context
        if span_context is None:
            return
        span_id = span_context.span_id
        if span.kind is not _SERVER:
            if self.requests.has_inner_layers:
                with guard.contained("closing a request's inner layer"):
                    self._inner_layer_ended(span, span_id)
            return
        # Mapped here, not on the delivery thread: a queued span would keep its request's
        # objects alive until the batch is made, and CPython's collector then runs about
        # 17 times as often. Those collections run mostly on request threads (they are the
        # ones allocating) and cost about what the mapping would save them, while holding
        # more memory (bench/RESULTS.md, section 2).
        with guard.contained("queueing a request's event"):
            try:
                self._queue(span, span_id)
            except Exception:
                # Counted before the guard logs (or, under the test suite, re-raises) it; a
                # plain try, not a context manager: it runs on every request.
                self.stats.drop("internal_error")
                raise

    def _queue(self, span: ReadableSpan, span_id: int) -> None:
        if self._inner_layer_ended(span, span_id):
            return
        context = self.requests.pop(span_id)
        if context is not None:
            if is_native_span(span):
                absorb_native_telemetry(context)
                if excluded_by_user(context):
                    return  # no span from the contrib instrumentation, no event from us
            if context.waiting:
                context.ended_span = span  # the event waits for the body or inner layer
                self._held += 1
                return
        self._submit(span, context)

    def _inner_layer_ended(self, span: ReadableSpan, span_id: int) -> bool:
        outer = self.requests.pop_nested(span_id)
        if outer is None:
            return False
        # An inner layer of a request (a mounted app's own span): what it learned goes to
        # the request's one event, the span itself makes none. The outer span may have ended
        # first (the contrib ASGI middleware ends it with the last body message, before the
        # exception leaves the inner app), so the event waits for its last inner layer.
        outer.inner_open -= 1
        absorb_inner_span(outer, span)
        self._release(outer)
        return True

    def body_sent(self, context: RequestContext) -> None:
        """A streamed body is done: the event of its already ended span can go now."""
        with guard.contained("queueing a streamed request's event"):
            try:
                self._release(context)
            except Exception:
                self.stats.drop("internal_error")
                raise

    def _release(self, context: RequestContext) -> None:
        span = context.ended_span
        if span is not None and not context.waiting:
            context.ended_span = None
            self._held -= 1
            self._submit(span, context)

    def _submit(self, span: ReadableSpan, context: RequestContext | None) -> None:
        event = self.event_for(span, context)
        if event is not None:
            self._worker.submit(event)

    def event_for(self, span: ReadableSpan, context: RequestContext | None) -> RequestEvent | None:
        """The event of a finished request; ``None`` (counted) when it cannot be a valid one."""
        try:
            facts = context.facts(self.requests.rules) if context is not None else NO_FACTS
            return span_to_event(span, facts)
        except Unmappable as exc:
            if exc.reason != "not_http":  # a gRPC or other non-HTTP server span is not ours
                self.stats.drop(f"unmappable_{exc.reason}")
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver what is buffered; True when everything went within the timeout."""
        return self._worker.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Flush within ``shutdown_timeout`` and stop; one summary line if anything was lost."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._held > 0:
            # Requests whose streamed body the server never closed (or whose inner layer
            # never ended) by now: their events cannot be made, and are counted lost.
            self.stats.drop("unfinished_request", self._held)
        self._worker.shutdown()
        snapshot = self.stats.snapshot()
        if snapshot["dropped_total"]:
            logger.warning(
                "beacon-otel: %d events sent, %d dropped (%s)",
                snapshot["sent"],
                snapshot["dropped_total"],
                ", ".join(f"{reason}={n}" for reason, n in sorted(snapshot["dropped"].items())),
            )

    # -- for users -------------------------------------------------------------------------

    def hooks(self, framework: str) -> dict[str, Hook]:
        """Hooks for a framework instrumentation, giving Beacon the consumer of each request.

        For example ``FastAPIInstrumentor.instrument_app(app, **processor.hooks("fastapi"))``.
        ``framework`` is one of asgi, fastapi, starlette, wsgi, flask, django.
        """
        return self.requests.hooks(framework)

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

    # -- failures ----------------------------------------------------------------------------

    def _report(self, error: DeliveryError) -> None:
        callback = self.config.on_error
        if callback is not None:
            # The user's callback: its failure is logged at DEBUG, never re-raised. The log lines
            # about delivery are the delivery log's, rate-limited there.
            with guard.contained("the on_error callback", user_code=True, level=logging.DEBUG):
                callback(error)
