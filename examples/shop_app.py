"""An example FastAPI service: plain application code, nothing about Beacon or OpenTelemetry.

Run it with zero code changes:  BEACON_INGEST_KEY=... opentelemetry-instrument uvicorn shop_app:app
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

app = FastAPI(title="shop")
admin = FastAPI(title="shop admin")

USERS = {1: "ada", 2: "grace", 3: "linus"}


class Item(BaseModel):
    sku: str
    price: float
    quantity: int = 1


class Order(BaseModel):
    items: list[Item]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/users/{user_id}")
def get_user(user_id: int) -> dict[str, object]:
    if user_id not in USERS:
        raise HTTPException(status_code=404, detail="no such user")
    return {"id": user_id, "name": USERS[user_id]}


@app.post("/orders", status_code=201)
def create_order(order: Order, request: Request) -> dict[str, object]:
    total = sum(item.price * item.quantity for item in order.items)
    return {"total": round(total, 2), "items": len(order.items)}


@app.get("/orders/{order_id}/invoice")
def invoice(order_id: int) -> dict[str, object]:
    if order_id % 7 == 0:
        raise RuntimeError(f"invoice renderer crashed on order {order_id}")
    return {"order": order_id, "pdf": f"/invoices/{order_id}.pdf"}


@admin.get("/reports/{report_id}")
def report(report_id: str) -> dict[str, str]:
    return {"report": report_id}


app.mount("/admin", admin)
