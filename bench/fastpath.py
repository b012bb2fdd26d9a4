"""Candidate fast paths for the request thread, measured against the code as it is.

Each candidate is a local copy of one function with one idea applied, installed by patching
(nothing in ``src/`` changes). ``measure`` times "hook + on_end" for a real FastAPI span with
each candidate alone and with all of them, in the semantic-convention mode of the process,
and checks that every candidate produces exactly the event the current code does.

The ideas, each from a profile of ``on_end`` (see ``bench.processor.breakdown``):

- ``attributes``: ``span.attributes`` wraps the SDK's ``BoundedAttributes``, a Python
  ``Mapping`` whose ``.get()`` goes through ``__getitem__`` and raises and catches ``KeyError``
  on every miss. The mapping looks up the stable name first, so with the default (old)
  conventions every lookup of method, status and path misses once. Reading its backing dict
  (with the public view as the fallback) makes every lookup a plain ``dict.get``.
- ``events``: ``span.events`` copies the SDK's ``BoundedList`` into a new tuple on every
  access, but the exception text only matters for a failed request: read it only when the
  status is missing or >= 500.
- ``positional``: build ``RequestEvent`` positionally (a slots dataclass ``__init__`` binds
  keywords noticeably slower).
- ``headers``: find the consumer headers with one dict lookup per header instead of a tuple
  membership test and a second dict; the common case is a single matching header.
- ``context``: read ``span.context`` once in ``on_end`` (it is a property; the current code
  reads it up to three times).
- ``templates``: remember the cleaned route template (a few dozen distinct values per app) in a
  small bounded dict instead of cleaning it on every request.
- ``registry``: open a request context without the registry lock (a dict store is atomic
  under the GIL; evict after the store when over the limit) and with no ``with`` block.
- ``submit``: count a queued event under the worker's lock instead of taking the stats lock
  too (``DeliveryStats.queued_one`` takes a second lock on every request).
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from beacon_otel import mapping, processor
from beacon_otel.consumer import ConsumerRules, consumer_from_values
from beacon_otel.event import MAX_ERROR, RequestEvent, clean_text, clean_validation_errors
from beacon_otel.hooks import RequestContext, RequestRegistry
from beacon_otel.mapping import Unmappable
from beacon_otel.worker import DeliveryWorker

_SERVER = SpanKind.SERVER


# -- mapping -----------------------------------------------------------------------------------


def plain_attributes(span: Any) -> Mapping[str, Any]:
    """The span's attributes as a plain dict when the SDK keeps one; else the public view."""
    bounded = getattr(span, "_attributes", None)
    if type(bounded) is dict:
        return bounded
    backing = getattr(bounded, "_dict", None)
    if type(backing) is dict:
        return backing
    return span.attributes or {}


_CACHE_LIMIT = 1024


def _remembered(clean: Callable[..., str]) -> Callable[..., str]:
    """``clean`` with its results for the first 1,024 distinct arguments remembered."""
    seen: dict[Any, str] = {}

    def remembered(*args: Any) -> str:
        try:
            return seen[args]
        except KeyError:
            value = clean(*args)
            if len(seen) < _CACHE_LIMIT:
                seen[args] = value
            return value
        except TypeError:  # an unhashable attribute value
            return clean(*args)

    return remembered


def make_span_to_event(
    *, attributes: bool, events: bool, positional: bool, templates: bool = False
) -> Callable[..., RequestEvent]:
    """``mapping.span_to_event`` with the chosen ideas applied; identical results.

    The helpers (``_method``, ``_path``, ``_route``, ...) are the live ones from ``src/``, given
    the request fallbacks when they take them, so only the body of ``span_to_event`` is copied.
    """
    _method, _path, _route, _int = mapping._method, mapping._path, mapping._route, mapping._int
    if templates:
        _route = _remembered_route(_route)
    _exception_text = mapping._exception_text
    new_status, old_status = mapping._STATUS
    method_takes_fallback = _method.__code__.co_argcount > 1
    path_takes_fallback = _path.__code__.co_argcount > 1

    def span_to_event(
        span: Any,
        *,
        consumer: str | None = None,
        route: str | None = None,
        validation_errors: list[dict[str, str]] | None = None,
        request_path: Callable[[], str | None] | None = None,
        request_method: Callable[[], str | None] | None = None,
    ) -> RequestEvent:
        attrs = plain_attributes(span) if attributes else (span.attributes or {})
        method = _method(attrs, request_method) if method_takes_fallback else _method(attrs)
        path = _path(attrs, request_path) if path_takes_fallback else _path(attrs)
        status = _int(attrs.get(new_status) or attrs.get(old_status))
        if events and status is not None and status < 500:
            failed, exception = False, None  # a served request: its events cannot matter
        else:
            exception = _exception_text(span.events)
            failed = (
                status >= 500
                if status is not None
                else (exception is not None or span.status.status_code is StatusCode.ERROR)
            )
        if status is None:
            if not failed:
                raise Unmappable("no_status")
            status = 500
        if not 100 <= status <= 599:
            raise Unmappable("invalid_status")
        error = None
        if failed:
            error = clean_text(exception, MAX_ERROR) if exception else f"HTTP {status}"
        start, end = span.start_time, span.end_time
        if start is None or end is None:
            raise Unmappable("unfinished_span")
        template = _route(route or attrs.get("http.route"), path)
        duration = max(0, (end - start) // 1_000_000)
        errors = clean_validation_errors(validation_errors) if validation_errors else None
        if positional:
            return RequestEvent(end, method, template, path, status, duration, consumer, error, errors)
        return RequestEvent(
            end_time_ns=end,
            method=method,
            route=template,
            path=path,
            status=status,
            duration_ms=duration,
            consumer=consumer,
            error=error,
            validation_errors=errors,
        )

    return span_to_event


def _remembered_route(route: Callable[[Any, str], str]) -> Callable[[Any, str], str]:
    """``mapping._route`` remembering the cleaned template (not the path it falls back to)."""
    remembered = _remembered(route)

    def cleaned(template: Any, path: str) -> str:
        # Without a template the route is the concrete path: per request, not worth remembering.
        return remembered(template, "") if template else route(template, path)

    return cleaned


# -- consumer headers --------------------------------------------------------------------------


def from_asgi_headers(self: ConsumerRules, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """``ConsumerRules.from_asgi_headers`` with one dict lookup per header."""
    configured_name, key_name, auth_name = self._asgi_names
    slots = {auth_name: 2, key_name: 1}
    if configured_name:
        slots[configured_name] = 0
    found: list[bytes | None] = [None, None, None]
    for name, value in headers:
        slot = slots.get(name)
        if slot is not None and found[slot] is None:
            found[slot] = value
    if found == [None, None, None]:
        return None
    return consumer_from_values(*found)


_FALLBACKS = ("request_path", "request_method")


# -- on_end --------------------------------------------------------------------------------------


def on_end(self: processor.BeaconSpanProcessor, span: Any) -> None:
    """``BeaconSpanProcessor.on_end`` reading ``span.context`` once."""
    if span.kind is not _SERVER or not self.config.enabled:
        return
    context = span.context
    span_id = context.span_id if context is not None else None
    if self._nested and span_id in self._nested:
        self._nested.discard(span_id)
        return
    try:
        request = self.requests.pop(span_id) if span_id is not None else None
        consumer = route = validation_errors = None
        extra: dict[str, Any] = {}
        if request is not None:
            consumer, route = self.requests.finish(request)
            validation_errors = request.validation_errors
            for name in _FALLBACKS:  # the request readers of this version of src/
                if hasattr(self.requests, name):
                    extra[name] = functools.partial(getattr(self.requests, name), request)
        try:
            event = processor.span_to_event(
                span, consumer=consumer, route=route, validation_errors=validation_errors, **extra
            )
        except Unmappable as exc:
            if exc.reason != "not_http":
                self.stats.drop(f"unmappable_{exc.reason}")
            return
        self._worker.submit(event)
    except Exception:
        self.stats.drop("internal_error")


# -- registry and worker ---------------------------------------------------------------------


def registry_open(self: RequestRegistry, span: Any) -> RequestContext | None:
    """``RequestRegistry.open`` without the lock: one atomic store, then evict if over."""
    if getattr(span, "kind", None) is not _SERVER or not span.is_recording():
        return None
    context = RequestContext()
    contexts = self._contexts
    contexts[span.get_span_context().span_id] = context
    if len(contexts) > self._limit:
        with self._lock, contextlib.suppress(StopIteration, KeyError, RuntimeError):
            contexts.pop(next(iter(contexts)))
            self.evicted += 1
    return context


def submit(self: DeliveryWorker, event: RequestEvent) -> bool:
    """``DeliveryWorker.submit`` counting under the worker's own lock only."""
    if self._pid != os.getpid():
        self._after_fork_in_child()
    with self._lock:
        if self._stopped:
            self._stats.drop("after_shutdown")
            return False
        buffer = self._buffer
        if len(buffer) >= self._max_buffer:
            buffer.popleft()
            self._stats.dropped["buffer_full"] += 1
        buffer.append(event)
        self._stats.queued += 1
        if self._thread is None:
            self._start_thread()
        elif len(buffer) == self._batch_size:
            self._wake.notify()
    return True


# -- the delivery thread ------------------------------------------------------------------------
#
# - ``proxies``: ``requests`` calls ``merge_environment_settings`` on every ``session.post``,
#   which walks the whole of ``os.environ`` (twice) looking for proxy and CA-bundle variables;
#   resolving them once per session, for the one URL it talks to, does the same job once.
# - ``timestamps``: ``format_ts`` builds a ``datetime`` per event; events of one batch mostly
#   share their second, so remember the formatted second and append the milliseconds.


def make_new_session(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``IngestTransport._new_session`` resolving environment proxies and CA bundle once."""
    import requests.utils

    def new_session(self: Any) -> Any:
        session = original(self)
        session.proxies.update(requests.utils.get_environ_proxies(self._url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        session.trust_env = False  # what it would have read per request is resolved above
        return session

    return new_session


def make_format_ts() -> Callable[[int], str]:
    """``event.format_ts`` formatting each distinct second once (UTC, millisecond precision)."""
    from datetime import datetime, timezone

    last: list[Any] = [None, ""]

    def format_ts(time_ns: int) -> str:
        seconds, nanos = divmod(time_ns, 1_000_000_000)
        if seconds != last[0]:
            moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
            last[0], last[1] = seconds, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{last[1]}.{nanos // 1_000_000:03d}+00:00"

    return format_ts


DELIVERY_CANDIDATES = ("proxies", "timestamps")


@contextlib.contextmanager
def delivery_installed(names: Iterable[str]) -> Iterator[None]:
    """Patch the named delivery-thread candidates in for the duration of the block."""
    from beacon_otel import event
    from beacon_otel.transport import IngestTransport

    names = set(names)
    saved = (IngestTransport._new_session, event.format_ts)
    try:
        if "proxies" in names:
            IngestTransport._new_session = make_new_session(IngestTransport._new_session)  # type: ignore[method-assign]
        if "timestamps" in names:
            event.format_ts = make_format_ts()
        yield
    finally:
        IngestTransport._new_session, event.format_ts = saved  # type: ignore[method-assign]


# -- installing them -----------------------------------------------------------------------------

CANDIDATES = ("attributes", "events", "positional", "templates", "headers", "context", "registry", "submit")
_MAPPING = {"attributes", "events", "positional", "templates"}


@contextlib.contextmanager
def installed(names: Iterable[str]) -> Iterator[None]:
    """Patch the named candidates in for the duration of the block."""
    names = set(names)
    unknown = names - set(CANDIDATES)
    if unknown:
        raise ValueError(f"unknown candidates: {sorted(unknown)}")
    saved = (
        processor.span_to_event,
        ConsumerRules.from_asgi_headers,
        processor.BeaconSpanProcessor.on_end,
        RequestRegistry.open,
        DeliveryWorker.submit,
    )
    try:
        if names & _MAPPING:
            processor.span_to_event = make_span_to_event(  # type: ignore[assignment]
                attributes="attributes" in names,
                events="events" in names,
                positional="positional" in names,
                templates="templates" in names,
            )
        if "headers" in names:
            ConsumerRules.from_asgi_headers = from_asgi_headers  # type: ignore[method-assign]
        if "context" in names:
            processor.BeaconSpanProcessor.on_end = on_end  # type: ignore[method-assign]
        if "registry" in names:
            RequestRegistry.open = registry_open  # type: ignore[method-assign]
        if "submit" in names:
            DeliveryWorker.submit = submit  # type: ignore[method-assign]
        yield
    finally:
        (
            processor.span_to_event,
            ConsumerRules.from_asgi_headers,
            processor.BeaconSpanProcessor.on_end,
            RequestRegistry.open,
            DeliveryWorker.submit,
        ) = saved


def measure(*, n: int, rounds: int) -> dict[str, float]:
    """Median ns of FastAPI "server_request_hook + on_end": as is, each candidate, all of them.

    The variants are interleaved round by round, so drift hits them alike.
    """
    from bench import processor as bench_processor

    fastapi = bench_processor.capture_fastapi()
    beacon = bench_processor._processor()
    spans = fastapi["spans"]
    server, scope = spans[0], fastapi["scope"]
    live = bench_processor._Live(server)
    hook = beacon.hooks("fastapi")["server_request_hook"]

    def one_request() -> None:
        hook(live, scope)
        beacon.on_end(server)

    variants: dict[str, tuple[str, ...]] = {"as is": ()}
    variants.update({name: (name,) for name in CANDIDATES})
    variants["all of them"] = CANDIDATES
    expected = _events(beacon, hook, spans, scope, ())
    stale = [
        label for label, names in variants.items() if _events(beacon, hook, spans, scope, names) != expected
    ]
    for label in stale:
        # A local copy no longer matching src/ is reported, not measured.
        del variants[label]
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, names in variants.items():
            with installed(names):
                samples[label].append(
                    bench_processor.time_calls(
                        one_request, n=n, rounds=1, reset=lambda: bench_processor.drain(beacon)
                    )
                )
    beacon.shutdown()
    medians = {label: statistics.median(values) for label, values in samples.items()}
    medians.update(dict.fromkeys(stale, float("nan")))
    return medians


def _events(beacon: Any, hook: Any, spans: list[Any], scope: Any, names: Iterable[str]) -> list[Any]:
    from bench import processor as bench_processor

    bench_processor.drain(beacon)
    with installed(names):
        for span in spans:
            hook(bench_processor._Live(span), scope)
            beacon.on_end(span)
    beacon.force_flush()
    events = beacon.dry_run_events()
    beacon.clear_dry_run_events()
    return events
