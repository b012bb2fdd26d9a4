"""One way to contain Beacon's own failures: never into the host app, never hidden from tests.

Every place where Beacon runs inside someone else's code (instrumentation hooks, ``on_end``,
the delivery thread, auto-run's start-up steps, user callbacks) goes through :func:`contained`
or :func:`guarded`. A failure is logged once per place with its traceback (later ones at
DEBUG, so a bug on the request path cannot flood the app's log), and the caller carries on.

Under the project's own test suite (``BEACON_RAISE_INTERNAL_ERRORS=1``) Beacon's own bugs are
re-raised instead, so a guard never hides one from a test. A user's callback that raises is a
user error, not ours: ``user_code=True`` guards never re-raise. Nor do auto-run's start-up steps
(:class:`startup_step`): there the promise is that the app starts whatever Beacon does.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

logger = logging.getLogger("beacon_otel")

RAISE_VARIABLE = "BEACON_RAISE_INTERNAL_ERRORS"
"""Set to ``1`` by the test suite: internal errors propagate instead of being logged."""

P = ParamSpec("P")
R = TypeVar("R")
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_seen: set[str] = set()
_seen_lock = threading.Lock()


def raise_internal_errors() -> bool:
    """Whether Beacon's own errors propagate (the project's test suite) instead of being logged."""
    return os.environ.get(RAISE_VARIABLE) == "1"


def log_internal_error(action: str, *, level: int = logging.ERROR, exc_info: ExcInfo | bool = True) -> None:
    """Log the exception being handled: with its traceback the first time ``action`` fails."""
    with _seen_lock:
        first = action not in _seen
        _seen.add(action)
    if first:
        logger.log(level, "beacon-otel: %s failed; the app is not affected", action, exc_info=exc_info)
    else:
        logger.debug("beacon-otel: %s failed again", action, exc_info=exc_info)


def internal_error(action: str, *, level: int = logging.ERROR) -> None:
    """Call from an ``except`` block on a hot path: log the error being handled, or re-raise it.

    The inline form of :class:`contained` for code that runs several times per request, where a
    ``try`` costs nothing until something raises and a context manager object costs a few calls.
    """
    error = sys.exc_info()[1]
    if error is not None and raise_internal_errors():
        raise error
    log_internal_error(action, level=level)


class contained:  # lower case: used like a function, ``with guard.contained("action"):``
    """Run the ``with`` body; anything it raises is logged (see the module doc) and swallowed.

    A class rather than ``@contextlib.contextmanager``: it runs a few times per request, and
    a generator-based context manager costs several times as much to enter and leave.
    """

    __slots__ = ("action", "level", "user_code")

    def __init__(self, action: str, *, user_code: bool = False, level: int = logging.ERROR) -> None:
        self.action = action
        self.user_code = user_code
        self.level = level

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        if not self.user_code and raise_internal_errors():
            return False
        assert exc is not None
        log_internal_error(self.action, level=self.level, exc_info=(exc_type, exc, tb))
        return True


class startup_step(contained):
    """An auto-run start-up step: anything it raises is logged at ERROR, every time, and swallowed.

    Unlike :class:`contained` it never re-raises, under the test suite too: the integration
    tests start real apps under ``opentelemetry-instrument`` and check that a failing step
    leaves the app serving. And every failure is an ERROR with its traceback: a process starts
    once, so each line is news, and one that goes to DEBUG would hide why Beacon is off.
    """

    __slots__ = ()

    def __init__(self, action: str) -> None:
        super().__init__(action, user_code=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            return False
        assert exc is not None
        logger.error(
            "beacon-otel: %s failed; the app runs on without it", self.action, exc_info=(exc_type, exc, tb)
        )
        return True


def guarded(
    action: str, *, default: R, user_code: bool = False, level: int = logging.ERROR
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function so that a failure is contained and ``default`` returned instead."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # try/except inline, not ``with contained(...)``: hooks run this on every request.
            try:
                return function(*args, **kwargs)
            except Exception:
                if not user_code and raise_internal_errors():
                    raise
                log_internal_error(action, level=level)
            return default

        return wrapper

    return decorate
