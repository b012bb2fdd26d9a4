"""aiohttp server app for the served-framework tests: ``python aiohttp_app.py PORT`` serves it."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

import beacon_otel


@web.middleware
async def session_user(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if user := request.headers.get("X-User"):
        beacon_otel.set_consumer(user)
    return await handler(request)


async def user(request: web.Request) -> web.Response:
    return web.json_response({"id": int(request.match_info["user_id"])})


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("kaboom")


def build_app() -> web.Application:
    """A fresh app: ``/users/{user_id}`` and ``/boom``."""
    app = web.Application(middlewares=[session_user])
    app.router.add_get("/users/{user_id}", user)
    app.router.add_get("/boom", boom)
    return app


if __name__ == "__main__":
    web.run_app(build_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
