"""FastAPI app for the auto-run tests: parametrised, failing, validated and mounted routes, and
a dependency naming the caller of a request with an ``X-User`` header (``set_consumer``)."""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

import beacon_otel


def session_user(request: Request) -> None:
    """What a session or JWT auth dependency does once it knows the user: name the caller."""
    if user := request.headers.get("x-user"):
        beacon_otel.set_consumer(user)


app = FastAPI(dependencies=[Depends(session_user)])
orders = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@app.get("/users/{user_id}")
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id, "pid": os.getpid()}


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("kaboom")


@app.post("/items")
def create_item(item: Item) -> Item:
    return item


@orders.get("/orders/{order_id}")
def get_order(order_id: int) -> dict[str, int]:
    return {"order": order_id}


app.mount("/api", orders)


@app.get("/whoami")
def whoami(request: Request) -> dict[str, str]:
    # What an auth layer would do: attach the caller's tenant to the request state.
    request.state.tenant = request.headers.get("x-tenant-name", "anonymous")
    return {"tenant": request.state.tenant}


def record_failure(error: Exception) -> None:
    """An on_error callback named by BEACON_ON_ERROR=fastapi_app:record_failure.

    Appends one line per failure to the file named by TEST_FAILURE_LOG.
    """
    with open(os.environ["TEST_FAILURE_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{type(error).__name__} {getattr(error, 'reason', '')} {getattr(error, 'status', '')}\n")


def tenant_of(scope: dict[str, object]) -> str | None:
    """A consumer resolver named by BEACON_CONSUMER_RESOLVER=fastapi_app:tenant_of."""
    state = scope.get("state")
    return state.get("tenant") if isinstance(state, dict) else None
