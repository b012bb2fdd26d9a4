"""A Flask (WSGI) app on AWS Lambda through apig-wsgi: ``_HANDLER=lambda_flask.handler``."""

from __future__ import annotations

from apig_wsgi import make_lambda_handler
from flask import Flask, request

import beacon_otel

app = Flask(__name__)


@app.before_request
def session_user() -> None:
    if user := request.headers.get("X-User"):
        beacon_otel.set_consumer(user)


@app.get("/users/<int:user_id>")
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("kaboom")


handler = make_lambda_handler(app, binary_support=True)
