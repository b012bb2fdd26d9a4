"""Consumer resolvers that block until the test says so, for the off-the-loop tests.

For ``/users/1`` they write ``$TEST_RESOLVER_DIR/started`` and wait (up to 60 s) for
``$TEST_RESOLVER_DIR/release``, then name ``slow-consumer``; every other request is
``fast-consumer`` at once. ``resolve`` is a plain function, ``resolve_async`` an ``async def``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any


def _dir() -> Path:
    return Path(os.environ["TEST_RESOLVER_DIR"])


def resolve(scope: Any) -> str:
    if scope.get("path") != "/users/1":
        return "fast-consumer"
    (_dir() / "started").touch()
    deadline = time.monotonic() + 60
    while not (_dir() / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "slow-consumer"


async def resolve_async(scope: Any) -> str:
    if scope.get("path") != "/users/1":
        return "fast-consumer"
    (_dir() / "started").touch()
    deadline = time.monotonic() + 60
    while not (_dir() / "release").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return "slow-consumer"
