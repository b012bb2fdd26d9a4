"""``beacon_otel.set_consumer()``: the app's own auth code names the caller of a request."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Header
from flask import Flask

import beacon_otel
from beacon_otel.testing import BeaconCapture

# Starlette's test client: newer releases warn of the httpx they use, older ones (the oldest
# session) of anyio's BlockingPortal alias.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
    pytest.mark.filterwarnings("ignore:The anyio.abc.BlockingPortal alias is deprecated"),
]


def fastapi_app() -> FastAPI:
    async def current_user(authorization: str = Header("")) -> str:
        # A JWT app: a new token per login, one user behind them all (the token's "sub").
        user = authorization.removeprefix("Bearer jwt-for-")
        beacon_otel.set_consumer(user)
        return user

    app = FastAPI()

    @app.get("/me")
    def me(user: str = Depends(current_user)) -> dict[str, str]:
        return {"user": user}

    return app


def get(capture: BeaconCapture, app: Any, path: str, headers: dict[str, str]) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    TestClient(capture.instrument(app)).get(path, headers=headers)
    (event,) = capture.events
    return event


@pytest.fixture
def capture() -> Any:
    capture = BeaconCapture()
    yield capture
    capture.close()


def test_fastapi_dependency_names_the_caller_over_the_authorization_hash(capture: BeaconCapture) -> None:
    """A JWT app's dependency gives the token's subject, not a new hash_ per token."""
    event = get(capture, fastapi_app(), "/me", {"Authorization": "Bearer jwt-for-alice"})
    assert event["consumer"] == "alice"


def test_wins_over_the_resolver_and_a_configured_header() -> None:
    """Over ``consumer_resolver`` and ``consumer_header`` too: the app's own word is last."""
    capture = BeaconCapture(consumer_header="X-Tenant", consumer_resolver=lambda scope: "resolved")
    try:
        event = get(capture, fastapi_app(), "/me", {"Authorization": "Bearer jwt-for-bob", "X-Tenant": "t"})
        assert event["consumer"] == "bob"
    finally:
        capture.close()


def test_flask_before_request_with_a_session(capture: BeaconCapture) -> None:
    """A session app (no credential header at all) names its logged-in user in before_request."""
    import flask

    app = Flask(__name__)
    app.secret_key = "tests-only"

    @app.before_request
    def load_user() -> None:
        if "user_id" in flask.session:
            beacon_otel.set_consumer(f"user-{flask.session['user_id']}")

    @app.post("/login")
    def login() -> str:
        flask.session["user_id"] = 42
        return "ok"

    @app.get("/profile")
    def profile() -> str:
        return "profile"

    client = capture.instrument(app).test_client()
    client.get("/profile")
    client.post("/login")
    client.get("/profile")
    assert [(e["path"], e["consumer"]) for e in capture.events] == [
        ("/profile", None),
        ("/login", None),
        ("/profile", "user-42"),
    ]


@pytest.mark.parametrize(
    ("identifier", "consumer"),
    [
        (12345, "12345"),
        ("x" * 300, "x" * 256),
        (None, None),
        ("", None),
    ],
)
def test_value_is_sanitised_and_cut_like_any_consumer(
    capture: BeaconCapture, identifier: object, consumer: str | None
) -> None:
    """Made text, valid UTF-8, cut to the contract's 256; None or empty means no consumer."""
    app = Flask(__name__)

    @app.get("/x")
    def x() -> str:
        beacon_otel.set_consumer(identifier)
        return "ok"

    capture.instrument(app).test_client().get("/x", headers={"X-API-Key": "key"})
    (event,) = capture.events
    assert event["consumer"] == consumer


def test_invalid_text_is_made_valid_utf8(capture: BeaconCapture) -> None:
    """A lone surrogate is replaced, as in any consumer: the ingest would refuse the batch."""
    app = Flask(__name__)

    @app.get("/x")
    def x() -> str:
        beacon_otel.set_consumer("bad\ud800byte")
        return "ok"

    capture.instrument(app).test_client().get("/x")
    (event,) = capture.events
    assert event["consumer"].startswith("bad") and event["consumer"].endswith("byte")
    event["consumer"].encode("utf-8")  # raises on a surrogate


def test_outside_a_request_does_nothing_and_says_so_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Called at import time or in a background job: no error, one DEBUG line, no event touched."""
    with caplog.at_level(logging.DEBUG, logger="beacon_otel"):
        beacon_otel.set_consumer("nobody")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "outside a request" in caplog.records[0].getMessage()
