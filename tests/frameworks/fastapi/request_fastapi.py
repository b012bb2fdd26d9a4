"""A FastAPI app shaped like users' apps: routers with an auth dependency, many routes, mounted apps.

Served zero-code (``opentelemetry-instrument uvicorn request_fastapi:app``) or, with
``REQUEST_APP_NATIVE=1``, set up by hand with FastAPI's own telemetry, as FastAPI documents it:
``FastAPI(telemetry={"tracer_provider": provider})`` with Beacon's processor on that provider.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

telemetry = None
if os.environ.get("REQUEST_APP_NATIVE") == "1":
    from opentelemetry.sdk.trace import TracerProvider

    from beacon_otel import BeaconConfig, BeaconSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BeaconSpanProcessor(BeaconConfig.from_env()))
    telemetry = {"tracer_provider": provider}


class Item(BaseModel):
    name: str
    price: float


def current_account(x_api_key: str | None = Header(default=None)) -> str:
    if x_api_key == "revoked":
        raise HTTPException(status_code=401, detail="revoked key")
    return x_api_key or "anonymous"


app = FastAPI(telemetry=telemetry) if telemetry is not None else FastAPI()
users = APIRouter(prefix="/users", dependencies=[Depends(current_account)])


@users.get("/{user_id}")
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@app.post("/items")
def create_item(item: Item) -> Item:
    return item


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("kaboom")


# Many routes, as a grown app has: every one is matched before the catch-all below.
for number in range(200):

    def report(number: int = number) -> dict[str, int]:
        return {"report": number}

    app.add_api_route(f"/reports/r{number}/{{report_id}}", report, methods=["GET"])

app.include_router(users)

v2 = FastAPI()


@v2.post("/orders")
def create_order(item: Item) -> Item:
    return item


@v2.get("/orders/{order_id}")
def get_order(order_id: int) -> dict[str, int]:
    if order_id == 0:
        raise KeyError("order 0")
    return {"order": order_id}


async def page(request: Request) -> JSONResponse:
    return JSONResponse({"page": request.path_params["name"]})


app.mount("/v2", v2)
app.mount("/pages", Starlette(routes=[Route("/{name}", page)]))
