"""Requests kept out of Beacon's events: ``exclude_paths`` / ``BEACON_EXCLUDE_PATHS``."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from beacon_otel.capture.processor import kept_events
from beacon_otel.config.settings import (
    DEFAULT_EXCLUDE_PATHS,
    DEFAULT_EXCLUDED_ENDINGS,
    BeaconConfig,
    BeaconConfigError,
)
from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.stats import DeliveryStats
from tests.conftest import make_pipeline

PATHS = [
    "/users/1",
    "/healthz",
    "/api/v1/health",
    "/favicon.ico",
    "/robots.txt",
    "/ping",
    "/internal/metrics",
]


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return str(user_id)

    @app.route("/<path:anything>")
    def anything(anything: str) -> str:
        return "ok"

    return app


def served_paths(**config: object) -> tuple[list[str], list[str], dict[str, object]]:
    """Paths of the events and of the exported spans, and Beacon's counters, for every path."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    pipeline = make_pipeline(**{"exclude_paths": DEFAULT_EXCLUDE_PATHS, **config})
    app = flask_app()
    FlaskInstrumentor().instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("flask")
    )
    try:
        client = app.test_client()
        for path in PATHS:
            assert client.get(path).status_code == 200
        events = [event["path"] for event in pipeline.events()]
        spans = [str(span.attributes.get("http.target")) for span in pipeline.exporter.get_finished_spans()]
        return events, spans, pipeline.processor.stats.snapshot()
    finally:
        pipeline.provider.shutdown()


def test_default_list_keeps_health_checks_and_browser_noise_out() -> None:
    """Health checks (under a prefix too), favicon, robots.txt make no event; the spans stay."""
    events, spans, stats = served_paths()
    assert events == ["/users/1", "/internal/metrics"]
    assert spans == PATHS  # other exporters see every request
    assert stats["excluded"] == 5 and stats["dropped_total"] == 0


def test_own_patterns_replace_the_default_list() -> None:
    """Given patterns are searched in the path; the default list no longer applies."""
    events, _, stats = served_paths(exclude_paths=(r"^/internal/", r"\.txt$"))
    assert events == ["/users/1", "/healthz", "/api/v1/health", "/favicon.ico", "/ping"]
    assert stats["excluded"] == 2


def test_empty_keeps_every_request() -> None:
    """``exclude_paths=()`` counts every request, health checks included."""
    events, _, stats = served_paths(exclude_paths=())
    assert events == PATHS and stats["excluded"] == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"^/internal/, \.txt$", (r"^/internal/", r"\.txt$")),
        ("none", ()),
        ("NONE", ()),
    ],
)
def test_read_from_the_environment(raw: str, expected: tuple[str, ...]) -> None:
    """Comma-separated in ``BEACON_EXCLUDE_PATHS``; ``none`` turns the default list off."""
    config = BeaconConfig.from_env({"BEACON_EXCLUDE_PATHS": raw, "BEACON_DRY_RUN": "true"})
    assert config.exclude_paths == expected


def test_default_when_unset() -> None:
    """Unset (or empty) means the default list."""
    config = BeaconConfig.from_env({"BEACON_EXCLUDE_PATHS": " ", "BEACON_DRY_RUN": "true"})
    assert config.exclude_paths == DEFAULT_EXCLUDE_PATHS


def test_a_bad_pattern_names_the_setting() -> None:
    """A pattern that does not compile fails at startup, naming the variable and the pattern."""
    with pytest.raises(BeaconConfigError) as caught:
        BeaconConfig.from_env({"BEACON_EXCLUDE_PATHS": "/ok,/bad(", "BEACON_DRY_RUN": "true"})
    assert caught.value.variable == "BEACON_EXCLUDE_PATHS"
    assert "'/bad('" in str(caught.value)


DEFAULT_MATCHES = [
    "/health",
    "/_health/",
    "/healthz",
    "/api/v1/healthcheck",
    "/health-check/",
    "/health_check",
    "/livez",
    "/readyz",
    "/ping",
    "/favicon.ico",
    "/robots.txt",
    "/apple-touch-icon-120x120-precomposed.png",
    "/robots.txt\n",
]


@pytest.mark.parametrize("path", DEFAULT_MATCHES)
def test_every_path_the_default_list_matches_has_one_of_its_endings(path: str) -> None:
    """DEFAULT_EXCLUDED_ENDINGS, which spares the search on other paths, covers every default match."""
    assert any(re.search(pattern, path) for pattern in DEFAULT_EXCLUDE_PATHS)
    assert path.endswith(DEFAULT_EXCLUDED_ENDINGS)


def test_the_default_list_searches_only_paths_it_can_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """A path with none of the default list's endings is kept without a search; the others are
    searched, and only the matches excluded."""
    searched: list[str] = []
    compile_pattern = re.compile

    class Counting:
        def __init__(self, pattern: str) -> None:
            self.pattern = compile_pattern(pattern)

        def search(self, path: str) -> object:
            searched.append(path)
            return self.pattern.search(path)

    monkeypatch.setattr(re, "compile", Counting)
    kept = kept_events(DEFAULT_EXCLUDE_PATHS, DeliveryStats())
    assert kept is not None
    paths = ["/users/1", "/users/ping", "/orders/", "/healthz", "/robots.txt"]
    outcome = [kept(RequestEvent(1, "GET", path, path, 200, 1, None, None)) for path in paths]
    assert [event is not None for event in outcome] == [True, False, True, False, False]
    assert searched == ["/users/ping", "/orders/", "/healthz", "/robots.txt"]
