"""A FastAPI app for the manual-setup integration tests (models at module level for FastAPI)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    price: float


class Order(BaseModel):
    items: list[Item]


def build_app() -> FastAPI:
    """A fresh app: users, orders (with validation), a mounted orders API and a failing route."""
    app = FastAPI()
    api = FastAPI()

    @app.get("/users/{user_id}")
    def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.post("/orders", status_code=201)
    def create_order(order: Order) -> dict[str, int]:
        return {"items": len(order.items)}

    @app.get("/fail")
    def fail() -> None:
        raise RuntimeError("payment backend down")

    @api.get("/orders/{order_id}")
    def get_order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    app.mount("/api", api)
    return app
