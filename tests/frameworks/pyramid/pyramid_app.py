"""Pyramid app for the served-framework tests: a route pattern, a failing view, an exception view.

The exception view answers the failure with a 500 page itself, as apps with a custom error page
do: OpenTelemetry's tween never sees the exception, Beacon's tween records it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.events import ContextFound

import beacon_otel


def user(request: Any) -> dict[str, int]:
    return {"id": int(request.matchdict["user_id"])}


def boom(request: Any) -> None:
    raise RuntimeError("kaboom")


def session_user(event: Any) -> None:
    """A ContextFound subscriber (routed, its span open) naming the caller: ``X-User`` here."""
    if user := event.request.headers.get("X-User"):
        beacon_otel.set_consumer(user)


def error_page(exc: Exception, request: Any) -> dict[str, str]:
    request.response.status_int = 500
    return {"error": "internal"}


def build_app(instrument: Callable[[Any], None] | None = None) -> Any:
    """A fresh WSGI app: ``/users/{user_id}`` and ``/boom``; ``instrument(config)`` sets up by hand."""
    with Configurator() as config:
        if instrument is not None:
            instrument(config)
        config.add_subscriber(session_user, ContextFound)
        config.add_route("user", "/users/{user_id}")
        config.add_view(user, route_name="user", renderer="json")
        config.add_route("boom", "/boom")
        config.add_view(boom, route_name="boom", renderer="json")
        config.add_exception_view(error_page, context=RuntimeError, renderer="json")
        return config.make_wsgi_app()


app = build_app()
