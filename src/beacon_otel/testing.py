"""Beacon in your own tests: the events a test's requests produced, with nothing sent anywhere.

A pytest plugin (the ``pytest11`` entry point loads it wherever beacon-otel is installed); its
one fixture, ``beacon_events``, gives a test a ``BeaconCapture``:

    def test_get_user(beacon_events):
        client = TestClient(beacon_events.instrument(app))
        client.get("/users/42", headers={"X-API-Key": "acme"})
        event = beacon_events.one(route="/users/{user_id}")
        assert event["status"] == 200 and event["consumer"] == "acme"

Loading the plugin costs nothing and changes nothing: it defines a fixture and imports
OpenTelemetry only when a test asks for it.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from beacon_otel.capture.processor import BeaconSpanProcessor

__all__ = ["BeaconCapture", "beacon_events"]


class BeaconCapture:
    """A dry-run Beacon pipeline of its own: a TracerProvider whose Beacon processor keeps events."""

    def __init__(self, **config: Any) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        from beacon_otel.capture.processor import BeaconSpanProcessor
        from beacon_otel.config.settings import BeaconConfig

        self.provider: TracerProvider = TracerProvider()
        self.processor: BeaconSpanProcessor = BeaconSpanProcessor(BeaconConfig(dry_run=True, **config))
        self.provider.add_span_processor(self.processor)
        self._undo: list[Callable[[], None]] = []
        self._hooks: dict[str, dict[str, Any]] = {}

    # -- wiring an app ---------------------------------------------------------------------

    def instrument(self, app: Any = None) -> Any:
        """Instrument ``app`` for this capture and return the app to send requests to.

        FastAPI, Starlette and Flask apps are instrumented in place, once per app object for the
        whole test session: each later ``instrument(app)`` points the same instrumentation at
        this capture, so a module-level app works in every test that asks, in any order, and
        also after tests that served it without Beacon. Between such tests its spans go
        nowhere. A plain ASGI or WSGI callable comes back wrapped in OpenTelemetry's
        middleware. With no app, Django is instrumented, also once (its settings must be
        configured).
        """
        kind = "django" if app is None else _framework_of(app)
        if kind in ("asgi", "wsgi"):
            return self._wrap(app, kind)
        shared = _SharedInstrumentation.get()
        shared.active = self
        self._undo.append(lambda: shared.release(self))
        if kind == "django":
            shared.instrument_django()
            return None
        shared.instrument(app, kind)
        return app

    def _wrap(self, app: Any, kind: str) -> Any:
        # Typed loosely: the instrumentations' own hints do not describe their hook keywords.
        options: dict[str, Any] = {"tracer_provider": self.provider, **self.processor.hooks(kind)}
        if kind == "asgi":
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as AsgiMiddleware

            asgi: Any = AsgiMiddleware
            return asgi(app, **options)
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as WsgiMiddleware

        wsgi: Any = WsgiMiddleware
        return wsgi(app, **options)

    def hooks_of(self, kind: str) -> dict[str, Any]:
        """This capture's hooks for ``kind``, made once."""
        hooks = self._hooks.get(kind)
        if hooks is None:
            hooks = self._hooks[kind] = self.processor.hooks(kind)
        return hooks

    # -- reading events --------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event so far, exactly as it would have been sent (after delivering the buffer)."""
        if not self.processor.force_flush(10_000):
            raise AssertionError("Beacon's buffer did not drain within 10 s")
        return self.processor.dry_run_events()

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        """The events whose fields equal every given value, e.g. ``find(status=422)``."""
        return [e for e in self.events if all(e.get(k) == v for k, v in fields.items())]

    def one(self, **fields: Any) -> dict[str, Any]:
        """The single event matching ``fields``; an AssertionError listing every event otherwise."""
        found = self.find(**fields)
        if len(found) != 1:
            raise AssertionError(
                f"expected exactly one Beacon event with {fields}, found {len(found)}; all events:\n"
                + "\n".join(f"  {event}" for event in self.events)
            )
        return found[0]

    def validation_fields(self, **fields: Any) -> list[str]:
        """The ``validation_errors`` fields of the one event matching ``fields``."""
        return [item["field"] for item in self.one(**fields).get("validation_errors", [])]

    def clear(self) -> None:
        """Forget the events so far."""
        self.processor.force_flush(10_000)
        self.processor.clear_dry_run_events()

    def close(self) -> None:
        """Stop receiving the shared instrumentation's spans and shut the pipeline down."""
        while self._undo:
            self._undo.pop()()
        self.provider.shutdown()


_HOOK_NAMES = {
    "fastapi": ("server_request_hook",),
    "starlette": ("server_request_hook",),
    "flask": ("request_hook", "response_hook"),
    "django": ("request_hook", "response_hook"),
}
"""The hooks each instrumentation takes, forwarded to the capture of the test running now."""


class _SharedInstrumentation:
    """Apps instrumented once per process, their spans going to the capture of the test running now.

    Instrumenting again in every test is what failed: FastAPI keeps the middleware stack it built
    at its first request (0 events after), Starlette refuses middleware once started, Flask
    refuses ``before_request`` functions after its first request, and the Django instrumentor
    is a singleton. So each app is instrumented the first time a test asks, against one
    provider whose span processor, and whose hooks, forward to the active capture.
    """

    _instance: _SharedInstrumentation | None = None

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        self.active: BeaconCapture | None = None
        self.provider = TracerProvider()
        self.provider.add_span_processor(_to_active_capture(self))
        self._apps: weakref.WeakSet[Any] = weakref.WeakSet()
        self._django = False

    @classmethod
    def get(cls) -> _SharedInstrumentation:
        """The one of this process (each pytest-xdist worker has its own)."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def release(self, capture: BeaconCapture) -> None:
        """``capture``'s test is over: spans go nowhere until the next capture asks."""
        if self.active is capture:
            self.active = None

    def hooks(self, kind: str) -> dict[str, Any]:
        """Hooks that call the active capture's hook of the same name, if it has one."""

        def forwarding(name: str) -> Callable[..., None]:
            def forward(*args: Any, **kwargs: Any) -> None:
                capture = self.active
                if capture is not None and (hook := capture.hooks_of(kind).get(name)) is not None:
                    hook(*args, **kwargs)

            return forward

        return {name: forwarding(name) for name in _HOOK_NAMES[kind]}

    def instrument(self, app: Any, kind: str) -> None:
        """Instrument ``app`` unless an earlier test did."""
        if app in self._apps:
            return
        options: dict[str, Any] = {"tracer_provider": self.provider, **self.hooks(kind)}
        if kind in ("fastapi", "starlette"):
            if kind == "fastapi":
                from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor as Instrumentor
            else:
                from opentelemetry.instrumentation.starlette import StarletteInstrumentor as Instrumentor
            # An app already served keeps the middleware stack it built: build it again.
            app.middleware_stack = None
            instrumentor: Any = Instrumentor
            instrumentor.instrument_app(app, **options)
            app.middleware_stack = None
        else:
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            # Flask refuses new before_request functions once it served a request (a guard
            # against set-up code running late); the instrumentation's is safe to add then.
            served = getattr(app, "_got_first_request", False)
            app._got_first_request = False
            try:
                flask: Any = FlaskInstrumentor()
                flask.instrument_app(app, **options)
            finally:
                app._got_first_request = served
        self._apps.add(app)

    def instrument_django(self) -> None:
        """Instrument Django unless an earlier test did."""
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        if self._django:
            return
        instrumentor = DjangoInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            # A singleton: a second instrument() would silently keep the first provider.
            raise RuntimeError("Django is already instrumented in this process; beacon_events cannot see it")
        instrumentor.instrument(tracer_provider=self.provider, **self.hooks("django"))
        self._django = True


def _to_active_capture(shared: _SharedInstrumentation) -> SpanProcessor:
    """The shared provider's span processor: the active capture's processor, or nothing.

    Made here, not at import: the plugin imports no OpenTelemetry SDK until a test needs it.
    """
    from opentelemetry.sdk.trace import SpanProcessor

    class ToActiveCapture(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if (capture := shared.active) is not None:
                capture.processor.on_start(span, parent_context)

        def on_end(self, span: Any) -> None:
            if (capture := shared.active) is not None:
                capture.processor.on_end(span)

    return ToActiveCapture()


def _framework_of(app: Any) -> str:
    """Which instrumentation fits ``app``, from its class's bases (no framework is imported)."""
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(app).__mro__}
    for name, kind in (
        ("fastapi.applications.FastAPI", "fastapi"),
        ("starlette.applications.Starlette", "starlette"),
        ("flask.app.Flask", "flask"),
    ):
        if name in names:
            return kind
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)  # noqa: B004
    return "asgi" if inspect.iscoroutinefunction(call) else "wsgi"


@pytest.fixture
def beacon_events() -> Iterator[BeaconCapture]:
    """A Beacon capture for one test: ``beacon_events.instrument(app)``, then read its events."""
    capture = BeaconCapture()
    try:
        yield capture
    finally:
        capture.close()
