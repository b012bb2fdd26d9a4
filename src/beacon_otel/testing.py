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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

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

    # -- wiring an app ---------------------------------------------------------------------

    def instrument(self, app: Any = None) -> Any:
        """Instrument ``app`` for this capture and return the app to send requests to.

        FastAPI, Starlette and Flask apps are instrumented in place (and uninstrumented after
        the test); a plain ASGI or WSGI callable comes back wrapped in OpenTelemetry's
        middleware. With no app, Django is instrumented (its settings must be configured).
        """
        if app is None:
            return self._instrument_django()
        kind = _framework_of(app)
        # Typed loosely: the instrumentations' own hints do not describe their hook keywords.
        options: dict[str, Any] = {"tracer_provider": self.provider, **self.processor.hooks(kind)}
        if kind == "fastapi":
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            fastapi: Any = FastAPIInstrumentor
            fastapi.instrument_app(app, **options)
            self._undo.append(lambda: fastapi.uninstrument_app(app))
            return app
        if kind == "starlette":
            from opentelemetry.instrumentation.starlette import StarletteInstrumentor

            starlette: Any = StarletteInstrumentor
            starlette.instrument_app(app, **options)
            self._undo.append(lambda: starlette.uninstrument_app(app))
            return app
        if kind == "flask":
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            flask: Any = FlaskInstrumentor()
            flask.instrument_app(app, **options)
            self._undo.append(lambda: flask.uninstrument_app(app))
            return app
        if kind == "asgi":
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as AsgiMiddleware

            asgi: Any = AsgiMiddleware
            return asgi(app, **options)
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as WsgiMiddleware

        wsgi: Any = WsgiMiddleware
        return wsgi(app, **options)

    def _instrument_django(self) -> None:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        instrumentor = DjangoInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            # A singleton: a second instrument() would silently keep the first provider.
            raise RuntimeError("Django is already instrumented in this process; beacon_events cannot see it")
        instrumentor.instrument(tracer_provider=self.provider, **self.processor.hooks("django"))
        self._undo.append(instrumentor.uninstrument)

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
        """Uninstrument what ``instrument`` did and shut the pipeline down."""
        while self._undo:
            self._undo.pop()()
        self.provider.shutdown()


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
