"""Litestar app for the served-framework tests: a router prefix, a typed path parameter,
a validated body and a failing route. ``build_app`` makes a fresh one for manual setups."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Router, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

import beacon_otel


@dataclass
class Pet:
    name: str
    age: int


@get("/pets/{pet_id:int}")
async def get_pet(pet_id: int) -> dict[str, int]:
    return {"id": pet_id}


@get("/pets")
async def list_pets(page_size: int = 10) -> list[dict[str, int]]:
    return [{"id": n} for n in range(page_size)]


@post("/pets")
async def create_pet(data: Pet) -> dict[str, str]:
    return {"name": data.name}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("kaboom")


def session_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard, where Litestar apps check who calls: one with an ``X-User`` header is that user."""
    if user := connection.headers.get("x-user"):
        beacon_otel.set_consumer(user)


def build_app(**options: Any) -> Litestar:
    """A fresh app: ``/zoo/pets/{pet_id:int}`` (router prefix), ``/zoo/pets?page_size=``,
    ``POST /zoo/pets``, ``/boom``."""
    zoo = Router(path="/zoo", route_handlers=[get_pet, list_pets, create_pet], guards=[session_user])
    with warnings.catch_warnings():
        # Litestar 2.19+ prefers FromPath[int], which older 2.x lack; the inferred style works in all.
        warnings.simplefilter("ignore", DeprecationWarning)
        return Litestar(route_handlers=[zoo, boom], openapi_config=None, **options)


app = build_app()
