"""The processor alone: ``on_start``/``on_end`` and the consumer hooks, in nanoseconds per call.

The spans are real: each framework serves one request under its stock instrumentation and
the finished spans are kept, in the semantic-convention mode under test (the mode is fixed
per process, so each mode runs in its own subprocess). The hooks are then called as the
instrumentations call them, with the scope, environ or request objects they were given, and
``on_end`` gets the finished span, so each iteration is one request's worth of work on the
request thread: the hook opens the request's context, ``on_end`` pops it, maps the span into
an event (consumer, route, sanitising) and queues the event for the delivery thread.

Hooks get the SDK span ``on_start`` got, as the instrumentations pass it (it has ended since,
which a hook finding its request through Beacon's context variable does not ask).
The delivery worker is configured never to wake during a timed loop (no batch ever fills),
so the loops time the request thread alone. ``breakdown`` then times the stages of that
work, and the delivery thread's work per event before its HTTP request (the wire dict and
the encoding); the HTTP request itself is measured by ``bench.scenarios.export``.

``count`` (run under callgrind by ``bench.harness.instructions``) counts the instructions of the same
request-thread work for FastAPI and Flask, and of the delivery thread's work per event.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

from bench.harness import apps, child, instructions

SEMCONV = {"old": "", "new": "http"}
"""``OTEL_SEMCONV_STABILITY_OPT_IN`` per mode: the default (old names) and the stable ones."""


HOOK_CASES = (
    "FastAPI: on_start + server_request_hook + on_end (X-API-Key)",
    "FastAPI: on_start + server_request_hook + on_end (Authorization, hashed)",
    "Flask: on_start + its hooks + on_end",
    "Django: on_start + its hooks + on_end",
)
"""Each framework's ``on_start``, hooks and ``on_end`` as a request calls them: its cost on its thread.

``on_start`` opens the request's context (and notes the request as the thread's current one),
the hooks keep the request's objects in it, ``on_end`` turns it into facts, maps and queues.

"Its hooks" are those ``processor.hooks(framework)`` returns, no more: an instrumentation
calls only the hooks it was given (Flask and Django may get a ``response_hook`` or not).
"""

FASTAPI_CASE = HOOK_CASES[0]
REQUEST_THREAD = "request thread"
DELIVERY_THREAD = "delivery thread, per event"
MAPPING_STAGE = "processor.event_for (context.facts + span_to_event: mapping, sanitising)"


def _processor() -> Any:
    """A processor whose delivery thread never wakes while a timed loop runs."""
    from beacon_otel import BeaconConfig, BeaconSpanProcessor

    config = BeaconConfig(dry_run=True, batch_size=10**9, max_buffer_size=10**9, flush_interval=86_400.0)
    return BeaconSpanProcessor(config)


def drain(processor: Any) -> None:
    """Between timed loops: deliver what they queued (to memory) and forget it."""
    processor.force_flush()
    processor.clear_dry_run_events()


def expect_event(processor: Any, call: Callable[[], object], consumer: str | None) -> None:
    """Fail unless one ``call`` delivers exactly one event for ``consumer``: the path timed maps.

    A span that ``event_for`` cannot map is counted and dropped, which is fast: without this
    check a broken capture or a renamed attribute would be timed as a very cheap ``on_end``.
    """
    drain(processor)
    call()
    processor.force_flush()
    events = processor.dry_run_events()
    drain(processor)
    if len(events) != 1 or events[0]["consumer"] != consumer:
        raise AssertionError(f"expected one event for consumer {consumer!r}, got {events}")


class _Keep(SpanProcessor):
    """A span processor that keeps every finished span."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.spans: list[Any] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span)

    def on_end(self, span: Any) -> None:
        self.spans.append(span)


class _Recorded:
    """Hooks that record the arguments the instrumentation passes them."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[Any, ...]] = {}

    def hook(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls[name] = args

        return record


def _provider() -> tuple[Any, _Keep]:
    from opentelemetry.sdk.trace import TracerProvider

    keep = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(keep)
    return provider, keep


def _server_spans(keep: _Keep) -> list[Any]:
    from opentelemetry.trace import SpanKind

    return [span for span in keep.spans if span.kind is SpanKind.SERVER]


def _server_spans_started(keep: _Keep) -> list[Any]:
    # on_start gets the SDK Span itself (on_end a ReadableSpan copy): these have ended now.
    from opentelemetry.trace import SpanKind

    return [span for span in keep.started if span.kind is SpanKind.SERVER]


def capture_fastapi() -> dict[str, Any]:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    provider, keep = _provider()
    recorded = _Recorded()
    app = apps.fastapi_app()
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, server_request_hook=recorded.hook("request")
    )
    apps.AsgiDriver(app).run(2, start=42)
    servers = _server_spans(keep)
    internal = [span for span in keep.spans if span not in servers]
    return {
        "spans": servers,
        "internal": internal[0],
        "scope": recorded.calls["request"][1],
        "started": _server_spans_started(keep),
        "started_all": keep.started,
    }


def capture_flask() -> dict[str, Any]:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    provider, keep = _provider()
    recorded = _Recorded()
    app = apps.flask_app()
    FlaskInstrumentor().instrument_app(
        app,
        tracer_provider=provider,
        request_hook=recorded.hook("request"),
        response_hook=recorded.hook("response"),
    )
    apps.WsgiDriver(app).run(2, start=42)
    return {
        "spans": _server_spans(keep),
        "started": _server_spans_started(keep),
        "app": app,
        "environ": recorded.calls["request"][1],
        "response": recorded.calls["response"][1:],
    }


def capture_django() -> dict[str, Any]:
    import django
    from django.conf import settings
    from django.http import JsonResponse
    from django.urls import path

    def get_user(request: Any, user_id: int) -> Any:
        return JsonResponse({"id": user_id, "name": "Ada", "plan": "pro"})

    # ROOT_URLCONF may be a module object: no file of its own needed.
    urls = types.ModuleType("bench_django_urls")
    urls.urlpatterns = [path("users/<int:user_id>", get_user)]  # type: ignore[attr-defined]
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=urls,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    provider, keep = _provider()
    recorded = _Recorded()
    DjangoInstrumentor().instrument(
        tracer_provider=provider,
        request_hook=recorded.hook("request"),
        response_hook=recorded.hook("response"),
    )
    apps.WsgiDriver(WSGIHandler()).run(2, start=42)
    return {
        "spans": _server_spans(keep),
        "started": _server_spans_started(keep),
        "request": recorded.calls["response"][1],
        "response": recorded.calls["response"][2],
    }


# -- timing ------------------------------------------------------------------------------------


def time_calls(call: Callable[[], object], *, n: int, rounds: int, reset: Callable[[], None]) -> float:
    """Median over ``rounds`` of the mean ns per call of ``n`` calls (loop overhead included)."""
    per_call = []
    for _ in range(rounds):
        reset()
        started = time.perf_counter_ns()
        for _ in range(n):
            call()
        per_call.append((time.perf_counter_ns() - started) / n)
    reset()
    return statistics.median(per_call)


def _timer(processor: Any, *, n: int, rounds: int) -> Callable[[Callable[[], object]], float]:
    """``time_calls`` with this bench's settings, draining ``processor`` between rounds."""

    def timed(call: Callable[[], object]) -> float:
        return time_calls(call, n=n, rounds=rounds, reset=lambda: drain(processor))

    return timed


def measure(semconv: str, *, n: int, rounds: int) -> dict[str, float]:
    """Every case, in this process's semantic-convention mode (``semconv``; the spans carry it)."""
    fastapi, flask_capture, django_capture = capture_fastapi(), capture_flask(), capture_django()
    processor = _processor()
    timed = _timer(processor, n=n, rounds=rounds)
    results = _span_cases(processor, fastapi, timed)
    results.update(_fastapi_cases(processor, fastapi, timed))
    results.update(_flask_case(processor, flask_capture, timed))
    results.update(_django_case(processor, django_capture, timed))
    results["FastAPI: one request in all (as above + 2 INTERNAL send spans)"] = (
        2 * results["on_start + on_end, INTERNAL span (ASGI http send)"] + results[FASTAPI_CASE]
    )
    processor.shutdown()
    return results


def _started_for(capture: dict[str, Any], finished: Any) -> Any:
    """The SDK span ``on_start`` got for the finished span ``finished`` (it has ended since)."""
    return next(span for span in capture["started"] if span.context == finished.context)


def _span_cases(processor: Any, fastapi: dict[str, Any], timed: Callable[..., float]) -> dict[str, float]:
    """The processor with no hooks: an INTERNAL span, a SERVER span (no request context to read)."""
    server = fastapi["spans"][0]
    server_started = _started_for(fastapi, server)
    on_end, on_start = processor.on_end, processor.on_start
    internal = fastapi["internal"]
    internal_started = next(span for span in fastapi["started_all"] if span.context == internal.context)
    expect_event(processor, lambda: (on_start(server_started), on_end(server)), consumer=None)
    return {
        "on_start + on_end, INTERNAL span (ASGI http send)": timed(
            lambda: (on_start(internal_started), on_end(internal))
        ),
        "on_start + on_end, SERVER span, no hooks (map + queue)": timed(
            lambda: (on_start(server_started), on_end(server))
        ),
    }


def _fastapi_request(processor: Any, fastapi: dict[str, Any], scope: Any) -> Callable[[], None]:
    """One FastAPI request's calls into Beacon: ``on_start``, the hook, ``on_end``."""
    server = fastapi["spans"][0]
    started = _started_for(fastapi, server)
    on_start, on_end = processor.on_start, processor.on_end
    asgi_hook = processor.hooks("fastapi")["server_request_hook"]

    def one_request() -> None:
        on_start(started)
        asgi_hook(started, scope)
        on_end(server)

    return one_request


def _fastapi_cases(processor: Any, fastapi: dict[str, Any], timed: Callable[..., float]) -> dict[str, float]:
    """FastAPI's request, with an API key and with a bearer token."""
    scope = fastapi["scope"]
    bearer = dict(scope)
    bearer["headers"] = [(name, value) for name, value in scope["headers"] if name != b"x-api-key"] + [
        (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl")
    ]
    with_key = _fastapi_request(processor, fastapi, scope)
    with_token = _fastapi_request(processor, fastapi, bearer)
    expect_event(processor, with_key, consumer=apps.API_KEY)
    return {FASTAPI_CASE: timed(with_key), HOOK_CASES[1]: timed(with_token)}


def _flask_case(
    processor: Any, flask_capture: dict[str, Any], timed: Callable[..., float]
) -> dict[str, float]:
    """Flask's request, inside the request's context as in Flask."""
    import flask

    one_request = _flask_request(processor, flask_capture)
    with flask_capture["app"].request_context(flask_capture["environ"]):
        assert flask.has_request_context()
        expect_event(processor, one_request, consumer=apps.API_KEY)
        result = timed(one_request)
    return {HOOK_CASES[2]: result}


def _django_case(
    processor: Any, django_capture: dict[str, Any], timed: Callable[..., float]
) -> dict[str, float]:
    """Django's request."""
    hooks = processor.hooks("django")
    request_hook, response_hook = hooks["request_hook"], hooks.get("response_hook")
    span = django_capture["spans"][0]
    started = _started_for(django_capture, span)
    request, response = django_capture["request"], django_capture["response"]

    def one_request() -> None:
        processor.on_start(started)
        request_hook(started, request)
        if response_hook is not None:
            response_hook(started, request, response)
        processor.on_end(span)

    expect_event(processor, one_request, consumer=apps.API_KEY)
    return {HOOK_CASES[3]: timed(one_request)}


# -- where the work happens ----------------------------------------------------------------------


def breakdown(*, n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Where Beacon's work on one FastAPI request (X-API-Key) happens, thread by thread.

    The request thread's stages overlap (the hook + ``on_end`` row is its total); the delivery
    thread's add up to its work per event before the HTTP request, which ``bench.scenarios.export`` times.
    """
    fastapi = capture_fastapi()
    processor = _processor()
    timed = _timer(processor, n=n, rounds=rounds)
    event, request_thread = _request_thread(processor, fastapi, timed)
    results = {REQUEST_THREAD: request_thread, DELIVERY_THREAD: _delivery_thread(event, timed)}
    processor.shutdown()
    return results


def _request_thread(
    processor: Any, fastapi: dict[str, Any], timed: Callable[..., float]
) -> tuple[Any, dict[str, float]]:
    """What a request waits for: ``on_start``, the hook, then ``on_end`` mapping and queueing.

    Returns the event too, for the delivery thread's stages.
    """
    from beacon_otel.frameworks.settle import settle
    from beacon_otel.mapping import span_view

    server = fastapi["spans"][0]
    started = _started_for(fastapi, server)
    scope = fastapi["scope"]
    hook = processor.hooks("fastapi")["server_request_hook"]
    registry, worker = processor.requests, processor._worker
    on_start, event_for = processor.on_start, processor.event_for
    span_id = server.context.span_id
    context = _hook_context(processor, fastapi)
    rules = registry.rules
    view = span_view.read(server)

    def settle_route() -> Any:
        # The route settle reads from the scope: cleared, so every call pays for it as every
        # request does.
        context.route = None
        return settle(context, view)

    def start_hook_pop() -> None:
        on_start(started)
        hook(started, scope)
        registry.pop(span_id)

    def facts() -> Any:
        # A context resolves its consumer once, then keeps it: undo that, so every call pays
        # for it as every request does.
        context.resolved = False
        return context.facts(rules)

    def map_request() -> Any:
        context.resolved = False
        return event_for(server, context)

    settle_route()
    event = map_request()
    if event is None or event.consumer != apps.API_KEY:
        raise AssertionError(f"event_for did not map the request with its consumer: {event}")
    return event, {
        "on_start + hook: open the request context (+ pop it)": timed(start_hook_pop),
        "settle (the frameworks' step: the route from the scope)": timed(settle_route),
        "context.facts (consumer from the scope headers, path, method, route)": timed(facts),
        MAPPING_STAGE: timed(map_request),
        "worker.submit alone (lock, getpid, counters)": timed(lambda: worker.submit(event)),
        "on_start + hook + on_end (FastAPI, X-API-Key): the request's total": timed(
            _fastapi_request(processor, fastapi, scope)
        ),
    }


def _delivery_thread(event: Any, timed: Callable[..., float]) -> dict[str, float]:
    """What the delivery thread does per event before it sends the batch: wire dict, encoding.

    ``as_dict`` formats the timestamp's second once and reuses it for the events of that
    second, so repeated calls time the usual case: most events of a batch share their second.
    """
    from beacon_otel.contract.event import encode_events

    batch = [event.as_dict() for _ in range(100)]
    return {
        "event.as_dict (the wire dict, ts formatting)": timed(event.as_dict),
        "encode_events, per event (a batch of 100 wire dicts)": timed(lambda: encode_events(batch)) / 100,
    }


def _hook_context(processor: Any, fastapi: dict[str, Any]) -> Any:
    """The context ``on_start`` and FastAPI's hook leave for ``on_end``, taken as ``on_end`` takes it."""
    server = fastapi["spans"][0]
    processor.on_start(_started_for(fastapi, server))
    processor.hooks("fastapi")["server_request_hook"](_started_for(fastapi, server), fastapi["scope"])
    context = processor.requests.pop(server.context.span_id)
    if context is None:
        raise AssertionError("the FastAPI hook opened no request context")
    return context


# -- running it ----------------------------------------------------------------------------------


def count(n: int) -> dict[str, Any]:
    """Under callgrind: hooks + ``on_end`` for FastAPI, then Flask, then the delivery thread's work
    per event (wire dict + its share of encoding a batch of 100), ``n`` of each, in that order."""
    from beacon_otel.contract.event import encode_events

    fastapi, flask_capture = capture_fastapi(), capture_flask()
    processor = _processor()
    fastapi_one = _fastapi_request(processor, fastapi, fastapi["scope"])

    def fastapi_requests(count: int) -> None:
        for _ in range(count):
            fastapi_one()

    expect_event(processor, lambda: fastapi_requests(1), consumer=apps.API_KEY)
    instructions.start()
    fastapi_requests(200)
    drain(processor)
    instructions.measured(fastapi_requests, n)
    drain(processor)
    flask_one = _flask_request(processor, flask_capture)
    with flask_capture["app"].request_context(flask_capture["environ"]):
        expect_event(processor, flask_one, consumer=apps.API_KEY)

        def flask_requests(count: int) -> None:
            for _ in range(count):
                flask_one()

        flask_requests(200)
        drain(processor)
        instructions.measured(flask_requests, n)
    drain(processor)
    event = _one_event(processor, fastapi)

    def deliver(count: int) -> None:
        for _ in range(max(1, count // 100)):
            encode_events([event.as_dict() for _ in range(100)])

    deliver(200)
    instructions.measured(deliver, n)
    processor.shutdown()
    return {"order": ["fastapi", "flask", "delivery"], "n": n, "per": [n, n, max(1, n // 100) * 100]}


def _one_event(processor: Any, fastapi: dict[str, Any]) -> Any:
    event, _ = _request_thread(processor, fastapi, lambda call: 0.0)
    return event


def _flask_request(processor: Any, flask_capture: dict[str, Any]) -> Callable[[], None]:
    """One Flask request's calls into Beacon: ``on_start``, its hooks, ``on_end``."""
    hooks = processor.hooks("flask")
    request_hook, response_hook = hooks["request_hook"], hooks.get("response_hook")
    span = flask_capture["spans"][0]
    started = _started_for(flask_capture, span)
    environ = flask_capture["environ"]
    status, headers = flask_capture["response"]

    def one_request() -> None:
        processor.on_start(started)
        request_hook(started, environ)
        if response_hook is not None:
            response_hook(started, status, headers)
        processor.on_end(span)

    return one_request


def count_all(n: int) -> dict[str, float]:
    """Instructions per request (per event for the delivery thread), old semantic conventions."""
    totals, answer = instructions.run_module(
        "bench.scenarios.processor_alone",
        ["count", str(n)],
        env={**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": ""},
    )
    return {
        name: total / per for name, total, per in zip(answer["order"], totals, answer["per"], strict=True)
    }


def run(*, n: int, rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Per semantic-convention mode, the cases and the breakdown, each in its own process."""
    modes: dict[str, dict[str, float]] = {}
    breakdowns: dict[str, dict[str, dict[str, float]]] = {}
    for mode, opt_in in SEMCONV.items():
        log(f"  processor: {mode} semantic conventions")
        modes[mode] = _subprocess(["measure", str(n), str(rounds)], opt_in)
        log(f"  processor: breakdown, {mode} semantic conventions")
        breakdowns[mode] = _subprocess(["breakdown", str(n), str(rounds)], opt_in)
    return {
        "modes": modes,
        "breakdown": breakdowns,
        "calls": n,
        "rounds": rounds,
        "cases": {"fastapi": FASTAPI_CASE, "flask": HOOK_CASES[2]},
        "delivery_thread": DELIVERY_THREAD,
    }


def _subprocess(args: list[str], opt_in: str) -> dict[str, Any]:
    result: dict[str, Any] = child.run_module(
        "bench.scenarios.processor_alone", args, env={**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": opt_in}
    )
    return result


def main(argv: list[str]) -> None:
    if argv and argv[0] == "count":
        print(json.dumps(count(int(argv[1]))))
        return
    if argv and argv[0] in ("measure", "breakdown"):
        n, rounds = int(argv[1]), int(argv[2])
        if argv[0] == "measure":
            result: dict[str, Any] = measure(
                os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""), n=n, rounds=rounds
            )
        else:
            result = breakdown(n=n, rounds=rounds)
        print(json.dumps(result))
        return
    results = run(n=10_000, rounds=5)
    for mode, cases in results["modes"].items():
        for case, ns in cases.items():
            print(f"{mode:4} {ns:9.0f} ns  {case}")
    for mode, threads in results["breakdown"].items():
        for thread, stages in threads.items():
            print(f"{mode:4} {thread}:")
            for stage, ns in stages.items():
                print(f"     {ns:9.0f} ns  {stage}")


if __name__ == "__main__":
    main(sys.argv[1:])
