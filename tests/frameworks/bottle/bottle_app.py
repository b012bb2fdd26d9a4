"""Bottle app for the served-framework tests: a typed rule and a failing route."""

from __future__ import annotations

from bottle import Bottle, request

import beacon_otel


def build_app() -> Bottle:
    """A fresh app: ``/books/<book_id:int>`` and ``/boom``."""
    app = Bottle()

    @app.hook("before_request")
    def session_user() -> None:
        if user := request.get_header("X-User"):
            beacon_otel.set_consumer(user)

    @app.get("/books/<book_id:int>")
    def get_book(book_id: int) -> dict[str, int]:
        return {"id": book_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    return app


app = build_app()
