"""The guard: contain and log Beacon's failures, re-raise them under the test suite."""

from __future__ import annotations

import logging

import pytest

from beacon_otel.common import guard


def test_contained_reraises_under_the_test_suite() -> None:
    """With BEACON_RAISE_INTERNAL_ERRORS=1 (the suite's default) an internal error propagates."""
    with pytest.raises(RuntimeError), guard.contained("a test action"):
        raise RuntimeError("boom")


def test_contained_logs_once_and_swallows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside the suite a failure is swallowed; the traceback is logged the first time only."""
    monkeypatch.delenv(guard.RAISE_VARIABLE)
    caplog.set_level(logging.DEBUG, logger="beacon_otel")
    for _ in range(3):
        with guard.contained("an action seen once"):
            raise RuntimeError("boom")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "an action seen once failed" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 2


def test_user_code_is_never_reraised(caplog: pytest.LogCaptureFixture) -> None:
    """A user's callback that raises is logged and swallowed even under the test suite."""
    with guard.contained("the consumer resolver", user_code=True, level=logging.WARNING):
        raise ValueError("user bug")
    assert any("the consumer resolver failed" in r.getMessage() for r in caplog.records)


def test_guarded_returns_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guarded function that raises returns its default; one that works returns its value."""
    monkeypatch.delenv(guard.RAISE_VARIABLE)

    @guard.guarded("dividing", default=-1)
    def divide(a: int, b: int) -> int:
        return a // b

    assert divide(6, 3) == 2
    assert divide(1, 0) == -1


def test_contained_logs_the_exception_it_swallowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first failure's log record carries that exception and its traceback, not an empty one."""
    monkeypatch.delenv(guard.RAISE_VARIABLE)
    caplog.set_level(logging.DEBUG, logger="beacon_otel")
    error = RuntimeError("the one raised")
    with guard.contained("an action whose error is logged"):
        raise error
    (record,) = [r for r in caplog.records if "an action whose error is logged" in r.getMessage()]
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    assert record.exc_info[2] is not None


def test_contained_lets_base_exceptions_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """KeyboardInterrupt and SystemExit are not failures to contain: they reach the caller."""
    monkeypatch.delenv(guard.RAISE_VARIABLE)
    with pytest.raises(KeyboardInterrupt), guard.contained("an interrupted action"):
        raise KeyboardInterrupt


def test_startup_step_logs_every_failure_at_error_and_never_reraises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Auto-run's steps: swallowed even under the test suite, each failure an ERROR with its traceback."""
    caplog.set_level(logging.DEBUG, logger="beacon_otel")
    for _ in range(2):
        with guard.startup_step("setting up Beacon"):
            raise RuntimeError("boom")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "beacon-otel: setting up Beacon failed; the app runs on without it"
    ] * 2
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in errors)


def test_startup_step_lets_an_interrupt_through() -> None:
    """Only exceptions are contained: Ctrl-C during start-up still stops the process."""
    with pytest.raises(KeyboardInterrupt), guard.startup_step("setting up Beacon"):
        raise KeyboardInterrupt
