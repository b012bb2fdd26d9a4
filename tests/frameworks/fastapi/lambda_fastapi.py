"""FastAPI on AWS Lambda through Mangum: ``_HANDLER=lambda_fastapi.handler``."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from mangum import Mangum

import beacon_otel


def session_user(request: Request) -> None:
    """An auth dependency naming the caller of a request with an ``X-User`` header."""
    if user := request.headers.get("x-user"):
        beacon_otel.set_consumer(user)


app = FastAPI(dependencies=[Depends(session_user)])


@app.get("/users/{user_id}")
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("kaboom")


handler = Mangum(app, lifespan="off")
