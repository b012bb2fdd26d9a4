"""Falcon ASGI app for the served-framework tests: a typed URI template and a failing route.

Built by ``build_app`` at import: under ``opentelemetry-instrument`` beacon-otel's instrumentor
has replaced ``falcon.asgi.App`` by then; by hand, build it after ``instrument()``.
"""

from __future__ import annotations

from typing import Any

import falcon.asgi

import beacon_otel


class SessionUser:
    """Middleware naming the caller of a request with an ``X-User`` header."""

    async def process_request(self, req: Any, resp: Any) -> None:
        if user := req.get_header("X-User"):
            beacon_otel.set_consumer(user)


class User:
    async def on_get(self, req: Any, resp: Any, user_id: int) -> None:
        resp.media = {"id": user_id}


class Boom:
    async def on_get(self, req: Any, resp: Any) -> None:
        raise RuntimeError("kaboom")


def build_app() -> Any:
    """A fresh app: ``/users/{user_id:int}`` and ``/boom``."""
    app = falcon.asgi.App(middleware=[SessionUser()])
    app.add_route("/users/{user_id:int}", User())
    app.add_route("/boom", Boom())
    return app


app = build_app()
