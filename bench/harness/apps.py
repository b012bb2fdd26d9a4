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


def _users_path(n: int) -> str:
    return f"/users/{n % USERS}"


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

    def __init__(self, app: Any, path: Callable[[int], str] | None = None) -> None:
        self.app = app
        self.path = path or _users_path
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

        path = self.path
        for i in range(start, start + n):
            await app(asgi_scope(path(i)), receive, send)
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

    def __init__(self, app: Callable[..., Iterable[bytes]], path: Callable[[int], str] | None = None) -> None:
        self.app = app
        self.path = path or _users_path
        self.not_ok = 0

    def run(self, n: int, start: int = 0) -> None:
        """Serve ``n`` requests, for paths ``/users/{start}`` onwards."""
        app, path = self.app, self.path
        statuses: list[str] = []

        def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            statuses.append(status)
            return _write

        for i in range(start, start + n):
            response = app(wsgi_environ(path(i)), start_response)
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


# -- apps of a given size (bench/scenarios/app_size.py) ------------------------------------------------------

FRAMEWORKS = ("fastapi", "starlette", "flask", "django")
ASGI_FRAMEWORKS = ("fastapi", "starlette")


def route_path(index: int, n: int) -> str:
    """The path of request ``n`` to route number ``index`` (0 is the first route declared)."""
    return f"/r{index}/items/{n % USERS}"


def sized_app(framework: str, routes: int) -> Any:
    """An app of ``routes`` routes ``/r{i}/items/{item_id}``, each parametrised, declared in order.

    Every framework matches routes in declaration order, so a request to the last route pays
    for trying all the others: the app's own routing cost grows with its size, and the table
    shows whether an observer's cost grows with it too. Django's app is a URLconf module;
    ``django_select`` makes it the one requests are resolved against.
    """
    return _SIZED[framework](routes)


def _fastapi_sized(routes: int) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    async def get_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "Ada", "plan": "pro"}

    for index in range(routes):
        app.add_api_route(f"/r{index}/items/{{item_id}}", get_item, methods=["GET"], name=f"r{index}")
    return app


def _starlette_sized(routes: int) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def get_item(request: Any) -> Any:
        return JSONResponse({"id": request.path_params["item_id"], "name": "Ada", "plan": "pro"})

    return Starlette(routes=[Route(f"/r{i}/items/{{item_id:int}}", get_item) for i in range(routes)])


def _flask_sized(routes: int) -> Any:
    from flask import Flask

    app = Flask(f"bench{routes}")

    def get_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "Ada", "plan": "pro"}

    for index in range(routes):
        app.add_url_rule(f"/r{index}/items/<int:item_id>", endpoint=f"r{index}", view_func=get_item)
    return app


def _django_sized(routes: int) -> Any:
    import types

    from django.http import JsonResponse
    from django.urls import path

    def get_item(request: Any, item_id: int) -> Any:
        return JsonResponse({"id": item_id, "name": "Ada", "plan": "pro"})

    urls = types.ModuleType(f"bench_urls_{routes}")
    urls.urlpatterns = [path(f"r{i}/items/<int:item_id>", get_item) for i in range(routes)]  # type: ignore[attr-defined]
    return urls


_SIZED: dict[str, Callable[[int], Any]] = {
    "fastapi": _fastapi_sized,
    "starlette": _starlette_sized,
    "flask": _flask_sized,
    "django": _django_sized,
}


def django_configure(middleware: list[str] | None = None, **extra: Any) -> None:
    """Configure Django's settings once per process (before the auto-run instrumentation reads them)."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="bench_unset_urls",
            MIDDLEWARE=list(middleware or []),
            INSTALLED_APPS=[],
            USE_TZ=True,
            **extra,
        )


def django_handler() -> Any:
    """Django's WSGI handler, after ``django.setup()``: build it once every instrumentation is in."""
    import django
    from django.core.handlers.wsgi import WSGIHandler

    django.setup()
    return WSGIHandler()


def django_select(urls: Any) -> None:
    """Resolve the next requests against ``urls`` (a module from ``sized_app("django", n)``)."""
    from django.conf import settings

    settings.ROOT_URLCONF = urls


def driver_for(framework: str, app: Any) -> AsgiDriver | WsgiDriver:
    """The in-process driver for ``framework``'s app."""
    return AsgiDriver(app) if framework in ASGI_FRAMEWORKS else WsgiDriver(app)
