"""Flask app for the fault-injection tests under gunicorn: one route per request number.

Responses the app produces (404 and 405 included) carry ``X-Served-By: app`` and the worker's pid,
so a client can tell which worker served a request, and a request the app saw from one gunicorn
refused itself.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from flask import Flask, Response

from beacon_otel.setup.autorun import AUTORUN

app = Flask(__name__)


@app.get("/items/<n>")
def get_item(n: str) -> dict[str, object]:
    return {"n": n, "pid": os.getpid()}


@app.get("/_beacon/stats")
def beacon_stats() -> dict[str, Any]:
    """This worker's Beacon counters (excluded from instrumentation)."""
    processor = AUTORUN.processor
    if processor is None:
        return {"pid": os.getpid(), "enabled": False}
    spool = processor.spool
    return {
        "pid": os.getpid(),
        "enabled": True,
        "delivery": processor.stats.snapshot(),
        "spool": dataclasses.asdict(spool.stats) if spool is not None else None,
        "buffered": processor.buffered(),
    }


@app.after_request
def mark_served(response: Response) -> Response:
    response.headers["X-Served-By"] = "app"
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response
