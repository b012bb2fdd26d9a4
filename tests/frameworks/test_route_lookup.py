"""The Starlette and Django instrumentations' route lookups: cheap, and the spans unchanged."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router, WebSocketRoute

from beacon_otel.frameworks import django as django_lookup
from beacon_otel.frameworks import starlette as starlette_lookup
from beacon_otel.setup.autorun import AutoRun
from tests.conftest import Pipeline, asgi_request, configure_django, make_pipeline

STARLETTE = "opentelemetry.instrumentation.starlette"
DJANGO = "opentelemetry.instrumentation.django.middleware.otel_middleware"


def stock_lookup() -> Any:
    """The Starlette instrumentation's own lookup, whether or not an earlier test narrowed it."""
    current = importlib.import_module(STARLETTE)._get_route_details
    return getattr(current, "__wrapped__", current)


def stock_starlette(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Starlette instrumentation with its own lookup for this test; its module."""
    module = importlib.import_module(STARLETTE)
    monkeypatch.setattr(module, "_get_route_details", stock_lookup())
    return module


def stock_django(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Django instrumentation resolving with Django's own ``resolve`` for this test; its module."""
    from django.urls import resolve

    module = importlib.import_module(DJANGO)
    monkeypatch.setattr(module, "resolve", resolve)
    return module


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def room(websocket: Any) -> None:
    await websocket.close()


class Anything(BaseRoute):
    """A route class of the app's own: the index cannot know what it matches."""

    def __init__(self, path: str) -> None:
        self.path = path

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        if scope["type"] == "http" and scope["path"].endswith("/anything"):
            return Match.FULL, {}
        return Match.NONE, {}


def varied_routes(count: int = 60) -> list[BaseRoute]:
    """Every kind of route the index places or leaves to the full walk, in a meaningful order."""
    inner = [Route("/orders/{order_id:int}", ok), Route("/", ok)]
    routes: list[BaseRoute] = [
        Route("/", ok),
        Route("/about", ok),
        Route("/methods", ok, methods=["POST"]),  # a GET is a partial match (405)
        Anything("/custom"),
        *[Route(f"/r{i}/items/{{item_id}}", ok) for i in range(count)],
        Route("/{slug}/x", ok),  # a parameter first: placed nowhere, walked always
        Route("/v{version}/ping", ok),
        Route("/r3/items/{item_id}/more", ok),
        Mount("/api", routes=inner),
        Host("{tenant}.example.com", app=Router([Route("/t/{name}", ok)])),
        WebSocketRoute("/ws/{room}", room),
        Route("/about", ok, methods=["DELETE"]),  # shadowed by the first /about
        Mount("", routes=[Route("/fallback/{rest:path}", ok)]),
    ]
    return routes


PATHS = [
    "/",
    "/about",
    "/about\n",
    "/methods",
    "/r0/items/1",
    "/r59/items/abc",
    "/r3/items/7/more",
    "/r3/items/7/less",
    "/r60/items/1",
    "/ok/x",
    "/v2/ping",
    "/api/orders/3",
    "/api/orders/x",
    "/api",
    "/api/",
    "/t/alice",
    "/ws/lobby",
    "/fallback/a/b",
    "/nope/anything",
    "/nowhere",
    "",
    "relative",
]


def scope_of(
    app: Any, path: str, *, kind: str = "http", method: str = "GET", root_path: str = ""
) -> dict[str, Any]:
    return {
        "type": kind,
        "app": app,
        "path": root_path + path,
        "root_path": root_path,
        "method": method,
        "headers": [(b"host", b"acme.example.com")],
        "path_params": {},
    }


def test_narrowed_lookup_answers_as_the_full_walk() -> None:
    """For every kind of route and request, the narrowed lookup gives the instrumentation's answer."""
    original = stock_lookup()
    narrowed = starlette_lookup.narrowed(original)
    app = Starlette(routes=varied_routes())
    checked = 0
    for path in PATHS:
        for kind in ("http", "websocket"):
            for method in ("GET", "POST", "DELETE"):
                for root_path in ("", "/prefix"):
                    scope = scope_of(app, path, kind=kind, method=method, root_path=root_path)
                    assert narrowed(dict(scope)) == original(dict(scope)), (path, kind, method, root_path)
                    checked += 1
    assert checked == len(PATHS) * 12


def test_narrowed_lookup_matches_only_the_routes_that_could_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request for the last of 1,000 routes tries its own route and the unplaced ones, not 1,000."""
    original = stock_lookup()
    tried: list[str] = []
    real = Route.matches

    def counting(self: Route, scope: Any) -> Any:
        tried.append(self.path)
        return real(self, scope)

    monkeypatch.setattr(Route, "matches", counting)
    app = Starlette(routes=[Route(f"/r{i}/items/{{item_id}}", ok) for i in range(1_000)])
    scope = scope_of(app, "/r999/items/5")
    assert original(dict(scope)) == "/r999/items/{item_id}"
    assert len(tried) == 1_000
    tried.clear()
    assert starlette_lookup.narrowed(original)(dict(scope)) == "/r999/items/{item_id}"
    assert tried == ["/r999/items/{item_id}"]


def test_index_follows_routes_added_later() -> None:
    """A route added after the first request is found (the index is rebuilt for the longer list)."""
    lookup = starlette_lookup.narrowed(stock_lookup())
    app = Starlette(routes=[Route("/a/{x}", ok)])
    assert lookup(scope_of(app, "/b/1")) is None
    app.router.routes.append(Route("/b/{x}", ok))
    assert lookup(scope_of(app, "/b/1")) == "/b/{x}"


def test_index_failure_falls_back_to_the_full_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """If indexing fails, Beacon's error is contained and the instrumentation's own walk answers."""
    monkeypatch.delenv("BEACON_RAISE_INTERNAL_ERRORS", raising=False)
    lookup = starlette_lookup.narrowed(stock_lookup())

    def broken(routes: Any) -> Any:
        raise RuntimeError("index bug")

    monkeypatch.setattr(starlette_lookup, "RouteIndex", broken)
    app = Starlette(routes=[Route("/a/{x}", ok)])
    assert lookup(scope_of(app, "/a/1")) == "/a/{x}"


# -- exported spans with and without the narrowed lookup ----------------------------------------

STARLETTE_REQUESTS = [
    ("GET", "/r0/items/1"),
    ("GET", "/r59/items/2"),
    ("GET", "/about"),
    ("GET", "/methods"),
    ("GET", "/api/orders/3"),
    ("GET", "/ok/x"),
    ("GET", "/v2/ping"),
    ("GET", "/fallback/a/b"),
    ("GET", "/nowhere"),
    ("POST", "/about"),
]


def exported(pipeline: Pipeline) -> list[tuple[str, str, dict[str, Any]]]:
    """What an exporter gets, without ids and times: name, kind, attributes, in order."""
    spans = pipeline.exporter.get_finished_spans()
    return [(span.name, span.kind.name, dict(span.attributes or {})) for span in spans]


def serve_starlette(requests: list[tuple[str, str]]) -> tuple[list[Any], list[dict[str, Any]]]:
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    pipeline = make_pipeline()
    app = Starlette(routes=varied_routes())
    StarletteInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("starlette")
    )
    for method, path in requests:
        asgi_request(app, method, path)
    events = pipeline.events()
    spans = exported(pipeline)
    pipeline.provider.shutdown()
    return spans, events


def test_starlette_spans_are_the_same_with_the_narrowed_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same span names, attributes and count exported, and the same Beacon routes (mounts too)."""
    module = stock_starlette(monkeypatch)
    stock_spans, stock_events = serve_starlette(STARLETTE_REQUESTS)
    starlette_lookup.install_route_lookup()
    assert hasattr(module._get_route_details, "__wrapped__")
    spans, events = serve_starlette(STARLETTE_REQUESTS)
    assert len(spans) == len(stock_spans) >= len(STARLETTE_REQUESTS)
    assert spans == stock_spans
    assert [e["route"] for e in events] == [e["route"] for e in stock_events]
    routes = dict(zip((path for _, path in STARLETTE_REQUESTS), (e["route"] for e in events), strict=True))
    assert routes["/api/orders/3"] == "/api/orders/{order_id:int}"
    assert routes["/r59/items/2"] == "/r59/items/{item_id}"


def test_autorun_narrows_the_starlette_and_django_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under auto-run with Beacon on, instrumenting Starlette or Django installs the cheap lookups."""
    configure_django()
    starlette_module, django_module = stock_starlette(monkeypatch), stock_django(monkeypatch)
    AutoRun({"BEACON_ENABLED": "false"}).instrumentor_kwargs("starlette", {})
    assert not hasattr(starlette_module._get_route_details, "__wrapped__")
    running = AutoRun({"BEACON_DRY_RUN": "true"})
    assert running.processor is not None
    running.instrumentor_kwargs("starlette", {})
    assert hasattr(starlette_module._get_route_details, "__wrapped__")
    running.instrumentor_kwargs("django", {})
    assert django_module.resolve is django_lookup.remembered_resolve
    running.processor.shutdown()


# -- Django ------------------------------------------------------------------------------------

DJANGO_REQUESTS = ["/", "/users/12", "/users/404", "/explode", "/missing", "/users/12"]


@pytest.fixture
def django_served() -> Iterator[Any]:
    """Serve DJANGO_REQUESTS through a freshly instrumented Django; answers spans and events."""
    configure_django()
    from django.test import Client
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    pipelines: list[Pipeline] = []
    django_lookup._resolved.set(None)  # nothing remembered from an earlier test's requests

    def serve() -> tuple[list[Any], list[dict[str, Any]]]:
        pipeline = make_pipeline()
        pipelines.append(pipeline)
        DjangoInstrumentor().instrument(
            tracer_provider=pipeline.provider, **pipeline.processor.hooks("django")
        )
        try:
            client = Client(raise_request_exception=False)
            for path in DJANGO_REQUESTS:
                client.get(path)
        finally:
            DjangoInstrumentor().uninstrument()
        return exported(pipeline), pipeline.events()

    yield serve
    for pipeline in pipelines:
        pipeline.provider.shutdown()


def test_django_spans_are_the_same_when_resolved_once(
    django_served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same span names, attributes and count exported, and the same Beacon events' routes."""
    stock_django(monkeypatch)
    stock_spans, stock_events = django_served()
    django_lookup.install_route_lookup()
    spans, events = django_served()
    assert len(spans) == len(stock_spans) == len(DJANGO_REQUESTS)
    assert spans == stock_spans
    assert [(e["route"], e["status"]) for e in events] == [(e["route"], e["status"]) for e in stock_events]
    assert [span[0] for span in spans][:2] == ["GET", "GET users/<int:pk>"]


def test_django_resolves_the_url_once_per_request(
    django_served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrumentation's resolution serves Django's: the root resolver runs once, not twice."""
    from django.urls import get_resolver
    from django.urls.resolvers import URLResolver

    stock_django(monkeypatch)
    root = get_resolver()
    resolved: list[str] = []
    real = URLResolver.resolve

    def counting(self: URLResolver, path: str) -> Any:
        if self is root:
            resolved.append(path)
        return real(self, path)

    monkeypatch.setattr(URLResolver, "resolve", counting)
    django_served()
    assert resolved.count("/users/12") == 4  # twice per request without Beacon's change
    resolved.clear()
    django_lookup.install_route_lookup()
    django_served()
    assert resolved.count("/users/12") == 2
    assert resolved.count("/missing") == 2  # a 404 is resolved again, as before


# -- Flask: no exclusion check without exclusions ------------------------------------------------


def serve_flask(
    monkeypatch: pytest.MonkeyPatch, paths: list[str]
) -> tuple[list[Any], list[dict[str, Any]], int]:
    """Serve ``paths`` through a freshly instrumented Flask app; spans, events, full URLs built."""
    import flask
    import werkzeug.sansio.request as sansio_request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    built = {"urls": 0}
    real = sansio_request.get_current_url

    def counted(*args: Any, **kwargs: Any) -> str:
        built["urls"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(sansio_request, "get_current_url", counted)
    app = flask.Flask("shop")

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    pipeline = make_pipeline()
    FlaskInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("flask")
    )
    client = app.test_client()
    for path in paths:
        client.get(path, headers={"X-API-Key": "k1"})
    events = pipeline.events()
    spans = exported(pipeline)
    pipeline.provider.shutdown()
    FlaskInstrumentor.uninstrument_app(app)
    return spans, events, built["urls"]


def test_flask_builds_no_full_url_when_nothing_is_excluded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under auto-run, the Flask instrumentation skips its exclusion check when nothing is excluded.

    The spans and Beacon's events are the ones the stock instrumentation gives; only the full URL
    built per request to match an empty exclusion list is gone.
    """
    from opentelemetry.instrumentation import flask as flask_instrumentation
    from opentelemetry.util.http import parse_excluded_urls

    monkeypatch.setattr(flask_instrumentation, "_excluded_urls_from_env", parse_excluded_urls(""))
    paths = ["/users/1", "/healthz", "/missing"]
    stock_spans, stock_events, stock_urls = serve_flask(monkeypatch, paths)
    assert stock_urls >= len(paths)  # the stock check builds every request's URL
    running = AutoRun({"BEACON_DRY_RUN": "true"})
    running.instrumentor_kwargs("flask", {})
    running.processor.shutdown()  # type: ignore[union-attr]
    spans, events, urls = serve_flask(monkeypatch, paths)
    assert urls == 0
    assert spans == stock_spans and len(spans) == len(paths)
    assert [(e["route"], e["status"], e["consumer"]) for e in events] == [
        (e["route"], e["status"], e["consumer"]) for e in stock_events
    ]


def test_flask_exclusions_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """With excluded URLs configured, auto-run leaves the check alone: excluded requests get no span."""
    from opentelemetry.instrumentation import flask as flask_instrumentation
    from opentelemetry.util.http import parse_excluded_urls

    monkeypatch.setattr(flask_instrumentation, "_excluded_urls_from_env", parse_excluded_urls("healthz"))
    running = AutoRun({"BEACON_DRY_RUN": "true"})
    running.instrumentor_kwargs("flask", {})
    running.processor.shutdown()  # type: ignore[union-attr]
    spans, events, _ = serve_flask(monkeypatch, ["/users/1", "/healthz"])
    assert [name for name, _, _ in spans] == ["GET /users/<int:user_id>"]
    assert [e["path"] for e in events] == ["/users/1"]


def test_host_scan_forgets_a_collected_router() -> None:
    """The Host scan's cached answer goes with its router: a new router never inherits it."""

    router = Router([Host("{tenant}.example.com", app=Router([]))])
    assert starlette_lookup._has_hosts(router) is True
    key = id(router)
    assert key in starlette_lookup._hosts_seen
    del router
    gc.collect()
    assert key not in starlette_lookup._hosts_seen


class _SlottedRouter:
    """An app's own router that takes no weak reference."""

    __slots__ = ("routes",)

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.routes = routes


def test_host_scan_answers_for_a_router_without_weak_references() -> None:
    """Such a router is scanned each time instead of cached, and the answer is still right."""
    assert starlette_lookup._has_hosts(_SlottedRouter([Host("a.example.com", app=Router([]))])) is True
    assert starlette_lookup._has_hosts(_SlottedRouter([Route("/x", lambda request: None)])) is False
