"""How much of an exception's text an event carries: ``error_detail`` / ``BEACON_ERROR_DETAIL``."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from beacon_otel.config.settings import BeaconConfig, BeaconConfigError
from beacon_otel.testing import BeaconCapture

# Starlette's test client: newer releases warn of the httpx they use, older ones (the oldest
# session) of anyio's BlockingPortal alias.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
    pytest.mark.filterwarnings("ignore:The anyio.abc.BlockingPortal alias is deprecated"),
]

# What SQLAlchemy raises for a duplicate row: the statement and its parameters on later lines.
SQLALCHEMY_TEXT = (
    "(sqlite3.IntegrityError) UNIQUE constraint failed: user.email\n"
    "[SQL: INSERT INTO user (email, hashed_password) VALUES (?, ?)]\n"
    "[parameters: ('z@example.com', '$2b$12$abc')]\n"
    "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
)


class IntegrityError(Exception):
    pass


def failing_app() -> FastAPI:
    app = FastAPI()

    @app.post("/auth/register")
    def register() -> None:
        raise IntegrityError(SQLALCHEMY_TEXT)

    return app


def error_of(**config: object) -> str | None:
    from fastapi.testclient import TestClient

    capture = BeaconCapture(**config)
    try:
        client = TestClient(capture.instrument(failing_app()), raise_server_exceptions=False)
        assert client.post("/auth/register").status_code == 500
        return capture.one(route="/auth/register")["error"]
    finally:
        capture.close()


def test_default_sends_the_first_line_only() -> None:
    """By default the error is the type and the message's first line: no SQL, no parameters."""
    error = error_of()
    assert error == "IntegrityError: (sqlite3.IntegrityError) UNIQUE constraint failed: user.email"
    assert "z@example.com" not in error


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("type", "IntegrityError"),
        ("first_line", "IntegrityError: (sqlite3.IntegrityError) UNIQUE constraint failed: user.email"),
        ("full", f"IntegrityError: {SQLALCHEMY_TEXT}"),
    ],
)
def test_each_setting(detail: str, expected: str) -> None:
    """``type`` sends the class name alone, ``full`` the whole text (still cut to 8,192)."""
    assert error_of(error_detail=detail) == expected


def test_read_from_the_environment() -> None:
    """``BEACON_ERROR_DETAIL`` sets it, in any case."""
    config = BeaconConfig.from_env({"BEACON_ERROR_DETAIL": "Type", "BEACON_DRY_RUN": "true"})
    assert config.error_detail == "type"


def test_a_bad_value_names_the_setting() -> None:
    """A value that is none of the three fails at startup, naming the variable and the choices."""
    with pytest.raises(BeaconConfigError) as caught:
        BeaconConfig.from_env({"BEACON_ERROR_DETAIL": "some", "BEACON_DRY_RUN": "true"})
    assert caught.value.variable == "BEACON_ERROR_DETAIL"
    assert "type, first_line, full" in str(caught.value) and "'some'" in str(caught.value)
