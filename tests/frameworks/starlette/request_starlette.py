"""A Starlette app with a FastAPI app mounted in it and Host routes (tenants on subdomains)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Host, Mount, Route


class Item(BaseModel):
    name: str
    price: float


api = FastAPI()


@api.post("/items")
def create_item(item: Item) -> Item:
    return item


@api.get("/items/{item_id}")
def get_item(item_id: int) -> dict[str, int]:
    if item_id == 0:
        raise LookupError("item 0")
    return {"id": item_id}


async def tenant_home(request: Request) -> JSONResponse:
    return JSONResponse({"page": request.path_params["name"]})


async def doc(request: Request) -> JSONResponse:
    return JSONResponse({"doc": request.path_params["slug"]})


tenant_site = Starlette(
    routes=[Route("/t/{name}", tenant_home), Mount("/docs", routes=[Route("/{slug}", doc)])]
)

app = Starlette(
    routes=[
        Mount("/api", api),
        Host("{tenant}.example.com", app=tenant_site),
    ]
)
