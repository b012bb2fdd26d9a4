"""Flask: a rule with some methods only, and a streamed body (a slow download)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response, request

app = Flask(__name__)


@app.route("/users/<int:user_id>", methods=["GET", "PUT"])
def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@app.get("/drip")
def drip() -> Response:
    seconds = float(request.args.get("duration", "1"))

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            time.sleep(seconds / 4)
            yield b"*"

    return Response(chunks(), mimetype="application/octet-stream")
