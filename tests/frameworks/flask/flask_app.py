"""Flask app for the auto-run tests, served by gunicorn with several workers."""

from __future__ import annotations

import os
import time

from flask import Flask, request

import beacon_otel

app = Flask(__name__)


@app.before_request
def session_user() -> None:
    """What a login extension does once it knows the user: name the caller (``X-User`` here)."""
    if user := request.headers.get("X-User"):
        beacon_otel.set_consumer(user)


@app.get("/users/<int:user_id>")
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id, "pid": os.getpid()}


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("kaboom")


@app.get("/slow")
def slow() -> dict[str, int]:
    # Long enough that concurrent requests spread over every worker.
    time.sleep(0.1)
    return {"pid": os.getpid()}
