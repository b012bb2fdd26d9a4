"""FastAPI app for the fault-injection tests: one cheap route per request number, and Beacon's counters.

Every response the app itself produces (404 and 405 included) carries ``X-Served-By: app``, so a
client can tell a request the app saw from one uvicorn refused before any instrumentation ran.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from fastapi import FastAPI

from beacon_otel.setup.autorun import AUTORUN

SERVED_BY = (b"x-served-by", b"app")


class MarkServed:
    """Pure ASGI middleware adding ``X-Served-By: app`` to every response start."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), SERVED_BY]
            await send(message)

        await self.app(scope, receive, marked)


app = FastAPI()
app.add_middleware(MarkServed)


@app.get("/items/{n}")
async def get_item(n: str) -> dict[str, Any]:
    return {"n": n, "pid": os.getpid()}


@app.get("/_beacon/stats")
async def beacon_stats() -> dict[str, Any]:
    """Beacon's delivery and spool counters in this process (excluded from instrumentation)."""
    processor = AUTORUN.processor
    if processor is None:
        return {"enabled": False}
    spool = processor.spool
    return {
        "enabled": True,
        "delivery": processor.stats.snapshot(),
        "spool": dataclasses.asdict(spool.stats) if spool is not None else None,
        "buffered": processor.buffered(),
    }
