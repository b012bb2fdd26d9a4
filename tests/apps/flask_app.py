"""Flask app for the auto-run tests, served by gunicorn with several workers."""

from __future__ import annotations

import os
import time

from flask import Flask

app = Flask(__name__)


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
