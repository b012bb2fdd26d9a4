"""Flask: a 405 has the rule that matched the path, and a streamed body counts until its last byte."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Pipeline, make_pipeline


@pytest.fixture(params=["stock", "lean"])
def flask_pipeline(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Pipeline]]:
    """The app under the contrib instrumentation with Beacon's hooks, or under the lean source."""
    from flask import Flask, Response
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from beacon_otel.frameworks.flask import install_lean_source, uninstall_lean_source

    app = Flask(__name__)

    @app.route("/users/<int:user_id>", methods=["GET", "PUT"])
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.route("/drip")
    def drip() -> Response:
        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                time.sleep(0.1)
                yield b"x"

        return Response(chunks(), mimetype="text/plain")

    pipeline = make_pipeline()
    if request.param == "lean":
        install_lean_source(pipeline.processor.requests, pipeline.provider)
        yield app, pipeline
        uninstall_lean_source()
    else:
        FlaskInstrumentor().instrument_app(
            app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("flask")
        )
        yield app, pipeline
        FlaskInstrumentor().uninstrument_app(app)
    pipeline.provider.shutdown()


def test_flask_405_has_the_rule_that_matched_the_path(flask_pipeline: tuple[Any, Pipeline]) -> None:
    """A method the rule does not allow: 405 with the rule's template, not the concrete path."""
    app, pipeline = flask_pipeline
    assert app.test_client().delete("/users/3").status_code == 405
    (event,) = pipeline.events()
    assert (event["route"], event["path"], event["status"]) == ("/users/<int:user_id>", "/users/3", 405)


def test_flask_streamed_body_counts_until_its_last_byte(flask_pipeline: tuple[Any, Pipeline]) -> None:
    """Flask's span ends before a streamed body is sent: the event waits for the body's close."""
    app, pipeline = flask_pipeline
    response = app.test_client().get("/drip", buffered=False)
    assert pipeline.events() == []  # the body is not sent yet
    assert b"".join(response.response) == b"xxx"
    response.close()
    (event,) = pipeline.events()
    assert (event["route"], event["status"]) == ("/drip", 200)
    assert event["duration_ms"] >= 300


def test_a_streamed_body_never_closed_is_counted_lost_at_shutdown(
    flask_pipeline: tuple[Any, Pipeline],
) -> None:
    """An event waiting for a body the server never closed is not lost silently."""
    app, pipeline = flask_pipeline
    response = app.test_client().get("/drip", buffered=False)
    pipeline.processor.shutdown()
    assert pipeline.processor.stats.snapshot()["dropped"] == {"unfinished_request": 1}
    response.close()
