"""Tornado app for the served-framework tests: ``python tornado_app.py PORT`` serves it."""

from __future__ import annotations

import asyncio
import sys

import tornado.web

import beacon_otel


class User(tornado.web.RequestHandler):
    def prepare(self) -> None:
        if user := self.request.headers.get("X-User"):
            beacon_otel.set_consumer(user)

    def get(self, user_id: str) -> None:
        self.write({"id": int(user_id)})


class Boom(tornado.web.RequestHandler):
    def get(self) -> None:
        raise RuntimeError("kaboom")


def build_app() -> tornado.web.Application:
    """A fresh app: ``/users/(?P<user_id>[0-9]+)`` (reported as ``/users/{user_id}``) and ``/boom``."""
    return tornado.web.Application([(r"/users/(?P<user_id>[0-9]+)", User), (r"/boom", Boom)])


async def serve(port: int) -> None:
    build_app().listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
