"""A Ninja API under /api/: a typed path parameter, a validated body and a failing operation."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import path
from ninja import NinjaAPI, Schema

api = NinjaAPI()


class Item(Schema):
    name: str
    price: float


@api.get("/items/{item_id}")
def get_item(request: HttpRequest, item_id: int) -> dict[str, int]:
    return {"id": item_id}


@api.post("/items")
def create_item(request: HttpRequest, item: Item) -> dict[str, Any]:
    return {"name": item.name}


@api.get("/boom")
def boom(request: HttpRequest) -> None:
    raise RuntimeError("kaboom")


urlpatterns: list[Any] = [path("api/", api.urls)]
