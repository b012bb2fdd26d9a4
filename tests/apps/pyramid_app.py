"""Pyramid app for the served-framework tests: a route pattern and a failing view."""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator


def user(request: Any) -> dict[str, int]:
    return {"id": int(request.matchdict["user_id"])}


def boom(request: Any) -> None:
    raise RuntimeError("kaboom")


def build_app() -> Any:
    """A fresh WSGI app: ``/users/{user_id}`` and ``/boom``."""
    with Configurator() as config:
        config.add_route("user", "/users/{user_id}")
        config.add_view(user, route_name="user", renderer="json")
        config.add_route("boom", "/boom")
        config.add_view(boom, route_name="boom", renderer="json")
        return config.make_wsgi_app()


app = build_app()
