"""The apps every benchmark serves, and in-process drivers that call them without sockets.

Apps are built by functions, not at import: the auto-run instrumentation replaces
``fastapi.FastAPI`` and ``flask.Flask``, so an app must be built from the class imported after
it. Each request asks for ``/users/{n}`` with a fresh path string and an ``X-API-Key``, so
every variant does its real work: route matching, a path per request, a consumer to identify.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from typing import Any

API_KEY = "bench-consumer-7"
USERS = 1000
"""Distinct paths cycled through: a realistic spread, bounded so nothing grows per path."""


def fastapi_app() -> Any:
    """A small FastAPI app: one parametrised route, JSON out, pydantic validation in."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "name": "Ada", "plan": "pro"}

    return app


def flask_app() -> Any:
    """The same app in Flask."""
    from flask import Flask

    app = Flask("bench")

    @app.get("/users/<int:user_id>")
    def get_user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "name": "Ada", "plan": "pro"}

    return app


# -- ASGI ----------------------------------------------------------------------------------


def asgi_scope(path: str) -> dict[str, Any]:
    """A minimal HTTP scope, as uvicorn would build it for ``GET path``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench.local"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"application/json"),
            (b"x-api-key", API_KEY.encode("ascii")),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


class AsgiDriver:
    """Calls an ASGI app ``n`` times on one event loop; counts responses that were not 200."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.not_ok = 0

    def run(self, n: int, start: int = 0) -> None:
        """Serve ``n`` requests, for paths ``/users/{start}`` onwards."""
        self.loop.run_until_complete(self._serve(n, start))

    def one(self, index: int) -> None:
        """Serve a single request (for paced runs)."""
        self.loop.run_until_complete(self._serve(1, index))

    async def _serve(self, n: int, start: int) -> None:
        app = self.app
        not_ok = 0
        request = {"type": "http.request", "body": b"", "more_body": False}

        async def receive() -> dict[str, Any]:
            return request

        async def send(message: dict[str, Any]) -> None:
            nonlocal not_ok
            if message["type"] == "http.response.start" and message["status"] != 200:
                not_ok += 1

        for i in range(start, start + n):
            await app(asgi_scope(f"/users/{i % USERS}"), receive, send)
        self.not_ok += not_ok


# -- WSGI ----------------------------------------------------------------------------------


def wsgi_environ(path: str) -> dict[str, Any]:
    """A minimal environ, as gunicorn would build it for ``GET path``."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "bench.local",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "application/json",
        "HTTP_X_API_KEY": API_KEY,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


class WsgiDriver:
    """Calls a WSGI app ``n`` times, consuming and closing each response as a server does."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.not_ok = 0

    def run(self, n: int, start: int = 0) -> None:
        """Serve ``n`` requests, for paths ``/users/{start}`` onwards."""
        app = self.app
        statuses: list[str] = []

        def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            statuses.append(status)
            return _write

        for i in range(start, start + n):
            response = app(wsgi_environ(f"/users/{i % USERS}"), start_response)
            try:
                for _chunk in response:
                    pass
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
        self.not_ok += sum(1 for status in statuses if not status.startswith("200"))

    def one(self, index: int) -> None:
        """Serve a single request (for paced runs)."""
        self.run(1, index)


def _write(data: bytes) -> None:
    pass
