"""WSGI: what a lean span source reads from an environ (the incoming trace context, the attributes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator, default_setter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from beacon_otel.frameworks.wsgi import IncomingContext, server_span_attributes

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TenantPropagator(TextMapPropagator):
    """A propagator of the app's own: reads ``x-tenant`` into the context."""

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = ...
    ) -> Context:  # type: ignore[assignment]
        value = getter.get(carrier, "x-tenant")
        return baggage.set_baggage("tenant", value[0], context) if value else (context or Context())

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        pass

    @property
    def fields(self) -> set[str]:
        return {"x-tenant"}


@pytest.fixture
def textmap() -> Iterator[Any]:
    """Sets the global propagator for one test, and puts the previous one back."""
    previous = propagate.get_global_textmap()
    yield propagate.set_global_textmap
    propagate.set_global_textmap(previous)


def test_no_w3c_header_gives_what_extraction_gives(textmap: Any) -> None:
    """The default propagators and no traceparent or baggage header: the same (empty) context,
    without asking them; with the headers, they are asked."""
    textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    incoming = IncomingContext()
    environ = {"REQUEST_METHOD": "GET", "HTTP_X_API_KEY": "k"}
    assert incoming(environ) == propagate.extract(environ) == Context()
    carrying = {**environ, "HTTP_TRACEPARENT": TRACEPARENT, "HTTP_BAGGAGE": "plan=pro"}
    extracted = incoming(carrying)
    assert f"{trace.get_current_span(extracted).get_span_context().trace_id:032x}" == TRACEPARENT[3:35]
    assert baggage.get_baggage("plan", extracted) == "pro"
    assert baggage.get_baggage("plan", incoming({**environ, "HTTP_BAGGAGE": "plan=pro"})) == "pro"


def test_baggage_first_starts_from_the_current_context_as_it_would(textmap: Any) -> None:
    """Baggage's propagator starts from the current context: so does the shortcut."""
    textmap(CompositePropagator([W3CBaggagePropagator(), TraceContextTextMapPropagator()]))
    token = otel_context.attach(baggage.set_baggage("a", "1"))
    try:
        got = IncomingContext()({})
        assert got == propagate.extract({})
        assert baggage.get_baggage("a", got) == "1"
    finally:
        otel_context.detach(token)


def test_another_propagator_is_always_asked_and_a_change_is_seen(textmap: Any) -> None:
    """A propagator Beacon does not know reads what it likes; setting a new one takes effect."""
    incoming = IncomingContext()
    textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    assert incoming({"HTTP_X_TENANT": "acme"}) == Context()
    textmap(CompositePropagator([TraceContextTextMapPropagator(), TenantPropagator()]))
    assert baggage.get_baggage("tenant", incoming({"HTTP_X_TENANT": "acme"})) == "acme"


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("GET", {"http.request.method": "GET"}),
        ("get", {"http.request.method": "GET", "http.request.method_original": "get"}),
        ("PURGE", {"http.request.method": "_OTHER", "http.request.method_original": "PURGE"}),
    ],
)
def test_server_span_attributes_follow_the_stable_conventions(method: str, expected: dict[str, str]) -> None:
    """Method (``_OTHER`` and the original for unknown ones), path and scheme; never the query."""
    environ = {
        "REQUEST_METHOD": method,
        "wsgi.url_scheme": "https",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/a",
        "QUERY_STRING": "token=secret",
    }
    assert server_span_attributes(environ) == {**expected, "url.path": "/a", "url.scheme": "https"}


@pytest.mark.parametrize(
    ("script_name", "path_info", "path"),
    [
        ("", "/users/7", "/users/7"),
        ("/api", "/users/7", "/api/users/7"),
        ("", "", "/"),
        ("", "/caf\u00c3\u00a9", "/caf\u00e9"),  # PEP 3333's latin-1 of the UTF-8 bytes
    ],
)
def test_the_span_path_is_the_clients(script_name: str, path_info: str, path: str) -> None:
    """``url.path``: the mount point and the path, as the client sent them; ``/`` when empty."""
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": script_name, "PATH_INFO": path_info}
    attributes = server_span_attributes(environ)
    assert (attributes["url.path"], attributes["url.scheme"]) == (path, "http")
