"""The processor alone: ``on_start``/``on_end`` and the consumer hooks, in nanoseconds per call.

The spans are real: each framework serves one request under its stock instrumentation and
the finished spans are kept, in the semantic-convention mode under test (the mode is fixed
per process, so each mode runs in its own subprocess). The hooks are then called as the
instrumentations call them, with the scope, environ or request objects they were given, and
``on_end`` gets the finished span, so each iteration is one request's worth of work:
the hook opens the request's context, ``on_end`` pops it, resolves the consumer, maps the
span and queues the event.

Hooks see a live span; the finished one no longer records, so they get ``_Live``, which
answers the three things a hook asks of a span exactly as a live SDK span does.
The delivery worker is configured never to wake (no batch ever fills): this measures the
request thread's cost; delivery is measured by ``bench.export``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

from bench import apps

SEMCONV = {"old": "", "new": "http"}
"""``OTEL_SEMCONV_STABILITY_OPT_IN`` per mode: the default (old names) and the stable ones."""


class _Live:
    """The part of a live SDK ``Span`` a hook touches, for a span that has already ended."""

    __slots__ = ("_context", "kind")

    def __init__(self, finished: Any) -> None:
        self.kind = finished.kind
        self._context = finished.context

    def is_recording(self) -> bool:
        return True

    def get_span_context(self) -> Any:
        return self._context


def _processor() -> Any:
    """A processor whose delivery thread never wakes while a timed loop runs."""
    from beacon_otel import BeaconConfig, BeaconSpanProcessor

    config = BeaconConfig(dry_run=True, batch_size=10**9, max_buffer_size=10**9, flush_interval=86_400.0)
    return BeaconSpanProcessor(config)


def drain(processor: Any) -> None:
    """Between timed loops: deliver what they queued (to memory) and forget it."""
    processor.force_flush()
    processor.clear_dry_run_events()


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


def measure(semconv: str, *, n: int, rounds: int) -> dict[str, float]:
    """Every case, in this process's semantic-convention mode."""
    import flask

    fastapi = capture_fastapi()
    flask_capture = capture_flask()
    django_capture = capture_django()
    processor = _processor()

    def timed(call: Callable[[], object]) -> float:
        return time_calls(call, n=n, rounds=rounds, reset=lambda: drain(processor))

    results: dict[str, float] = {}
    server = fastapi["spans"][0]
    live = _Live(server)
    on_end, on_start = processor.on_end, processor.on_start
    pending = fastapi["started"]

    def start_server_span() -> None:
        # Alternate two spans: the previous request's span has ended, as in a real server.
        pending.reverse()
        on_start(pending[0])

    results["on_start, SERVER span"] = timed(start_server_span)
    internal = fastapi["internal"]
    internal_started = next(span for span in fastapi["started_all"] if span.context == internal.context)
    results["on_start + on_end, INTERNAL span (ASGI http send)"] = timed(
        lambda: (on_start(internal_started), on_end(internal))
    )
    results["on_end, SERVER span, no hook context (map + queue)"] = timed(lambda: on_end(server))

    asgi_hook = processor.hooks("fastapi")["server_request_hook"]
    scope = fastapi["scope"]
    results["FastAPI: server_request_hook + on_end (X-API-Key)"] = timed(
        lambda: (asgi_hook(live, scope), on_end(server))
    )
    bearer = dict(scope)
    bearer["headers"] = [(name, value) for name, value in scope["headers"] if name != b"x-api-key"] + [
        (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl")
    ]
    results["FastAPI: server_request_hook + on_end (Authorization, hashed)"] = timed(
        lambda: (asgi_hook(live, bearer), on_end(server))
    )

    flask_hooks = processor.hooks("flask")
    flask_request, flask_response = flask_hooks["request_hook"], flask_hooks["response_hook"]
    flask_span = flask_capture["spans"][0]
    flask_live = _Live(flask_span)
    environ = flask_capture["environ"]
    status, headers = flask_capture["response"]
    app = flask_capture["app"]
    with app.request_context(environ):
        assert flask.has_request_context()
        results["Flask: request_hook + response_hook + on_end"] = timed(
            lambda: (
                flask_request(flask_live, environ),
                flask_response(flask_live, status, headers),
                on_end(flask_span),
            )
        )

    django_hooks = processor.hooks("django")
    django_request, django_response = django_hooks["request_hook"], django_hooks["response_hook"]
    django_span = django_capture["spans"][0]
    django_live = _Live(django_span)
    request, response = django_capture["request"], django_capture["response"]
    results["Django: request_hook + response_hook + on_end"] = timed(
        lambda: (
            django_request(django_live, request),
            django_response(django_live, request, response),
            on_end(django_span),
        )
    )
    results["FastAPI: one request in all (on_start + hook + 2 INTERNAL + SERVER on_end)"] = (
        results["on_start, SERVER span"]
        + 2 * results["on_start + on_end, INTERNAL span (ASGI http send)"]
        + results["FastAPI: server_request_hook + on_end (X-API-Key)"]
    )
    processor.shutdown()
    return results


def breakdown(*, n: int, rounds: int) -> dict[str, float]:
    """Where ``on_end`` of a FastAPI request spends its time, stage by stage (old semconv)."""
    from beacon_otel.event import encode_batch
    from beacon_otel.mapping import span_to_event

    fastapi = capture_fastapi()
    processor = _processor()
    worker = processor._worker  # the delivery worker's submit, timed on its own
    server = fastapi["spans"][0]
    live = _Live(server)
    scope = fastapi["scope"]
    registry = processor.requests
    hook = processor.hooks("fastapi")["server_request_hook"]

    def timed(call: Callable[[], object]) -> float:
        return time_calls(call, n=n, rounds=rounds, reset=lambda: drain(processor))

    def hook_and_pop() -> None:
        hook(live, scope)
        registry.pop(server.context.span_id)

    def hook_pop_finish() -> None:
        hook(live, scope)
        registry.finish(registry.pop(server.context.span_id))

    event = span_to_event(server, consumer=apps.API_KEY)
    results = {
        "hook: open the request context (+ pop it)": timed(hook_and_pop),
        "  + consumer from the scope headers (registry.finish)": timed(hook_pop_finish),
        "span.attributes (one MappingProxy)": timed(lambda: server.attributes),
        "span_to_event (mapping + sanitising)": timed(lambda: span_to_event(server, consumer=apps.API_KEY)),
        "worker.submit (lock, getpid, counters)": timed(lambda: worker.submit(event)),
        "[delivery thread] event.as_dict (ts formatting)": timed(event.as_dict),
        "[delivery thread] encode_batch, per event (batch of 100)": timed(lambda: encode_batch([event] * 100))
        / 100,
    }
    processor.shutdown()
    return results


def run(*, n: int, rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Each semantic-convention mode in its own process: the cases, then the candidates."""
    modes: dict[str, dict[str, float]] = {}
    candidates: dict[str, dict[str, float]] = {}
    for mode, opt_in in SEMCONV.items():
        log(f"  processor: {mode} semantic conventions")
        modes[mode] = _subprocess(["measure", str(n), str(rounds)], opt_in)
        log(f"  processor: candidate fast paths, {mode} semantic conventions")
        candidates[mode] = _subprocess(["candidates", str(n), str(rounds)], opt_in)
    log("  processor: breakdown")
    breakdown_ = _subprocess(["breakdown", str(n), str(rounds)], "")
    return {"modes": modes, "candidates": candidates, "breakdown": breakdown_}


def _subprocess(args: list[str], opt_in: str) -> dict[str, float]:
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": opt_in}
    out = subprocess.run(
        [sys.executable, "-m", "bench.processor", *args],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv and argv[0] in ("measure", "candidates", "breakdown"):
        n, rounds = int(argv[1]), int(argv[2])
        if argv[0] == "measure":
            result = measure(os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""), n=n, rounds=rounds)
        elif argv[0] == "candidates":
            from bench import fastpath

            result = fastpath.measure(n=n, rounds=rounds)
        else:
            result = breakdown(n=n, rounds=rounds)
        print(json.dumps(result))
        return
    results = run(n=10_000, rounds=5)
    for part in ("modes", "candidates"):
        for mode, cases in results[part].items():
            for case, ns in cases.items():
                print(f"{mode:4} {ns:9.0f} ns  {case}")
    for stage, ns in results["breakdown"].items():
        print(f"     {ns:9.0f} ns  {stage}")


if __name__ == "__main__":
    main(sys.argv[1:])
