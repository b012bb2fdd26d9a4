"""Flask app whose view makes its own HTTPS call with requests, for gevent and eventlet workers.

``TEST_UPSTREAM_URL`` is a loopback HTTPS server; its CA comes from ``REQUESTS_CA_BUNDLE``. The
view answers 200 with the upstream's status, or 502 naming the exception the call raised (a
``RecursionError`` when ``ssl`` was imported before the worker patched it).
"""

from __future__ import annotations

import os

import requests
from flask import Flask

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def get_user(user_id: int) -> tuple[dict[str, object], int]:
    try:
        upstream = requests.get(os.environ["TEST_UPSTREAM_URL"], timeout=15)
    except BaseException as exc:  # the test reads what broke
        return {"id": user_id, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}, 502
    return {"id": user_id, "upstream": upstream.status_code}, 200
