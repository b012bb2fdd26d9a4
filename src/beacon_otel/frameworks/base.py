"""What each framework's module builds on: a hook's shape and guard, and what several share.

A hook runs inside the instrumentation, on the request's thread: it only keeps references (the
scope, the environ, the framework's request); the consumer is read when the span ends. Each is
guarded (WSGI hooks are unprotected upstream: one that raises breaks the request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.trace import Status, StatusCode

from beacon_otel.common import guard
from beacon_otel.request.registry import RequestRegistry

Hook = Callable[..., None]
HookTable = Callable[[RequestRegistry], dict[str, Hook]]
"""A framework's hooks: from the request registry to its instrumentation's keyword arguments."""


def hook(action: str) -> Callable[[Hook], Hook]:
    """A hook whose failure is contained: logged once, never raised into the request."""
    return guard.guarded(action, default=None)


def record_once(span: Any, exception: BaseException) -> None:
    """Record ``exception`` on ``span`` as an error, unless the span has an exception already."""
    if span.is_recording() and not any(event.name == "exception" for event in span.events):
        span.record_exception(exception)
        span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))


def headers_environ(method: str, path: str, headers: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A PEP 3333 view of a request's method, path and headers (the first value of each)."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path}
    for name, value in headers:
        environ.setdefault("HTTP_" + name.upper().replace("-", "_"), value)
    return environ


def validation_items(errors: Iterable[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as the contract's items: dotted field path, message, type."""
    return [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
        if isinstance(error, Mapping)
    ]
