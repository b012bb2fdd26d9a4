"""A FastAPI app of many routes whose patterns count the matches tried (a spy on route matching).

``GET /matches`` answers how many route patterns requests have tried since start-up, its own
request included, and how many routes the app has. The other routes are ``/r{i}/items/{item_id}``
(``SIZED_APP_ROUTES`` of them, 300 by default) declared in order after it, so a request to the
last one tries every pattern of the app once in FastAPI's own routing; any second lookup of the
route (an instrumentation naming its span) tries them again.
"""

from __future__ import annotations

import os
import re
from typing import Any

from fastapi import FastAPI

tried = 0


class CountingPattern:
    """A route's compiled pattern that counts its ``match`` calls (route matching, whoever does it)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def match(self, path: str) -> re.Match[str] | None:
        global tried
        tried += 1
        return self.pattern.match(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pattern, name)


app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)  # no routes but the app's own


@app.get("/matches")
def matches() -> dict[str, int]:
    return {"tried": tried, "routes": len(app.routes)}


for number in range(int(os.environ.get("SIZED_APP_ROUTES", "300"))):

    def item(item_id: int, number: int = number) -> dict[str, int]:
        return {"route": number, "item": item_id}

    app.add_api_route(f"/r{number}/items/{{item_id}}", item, methods=["GET"])

for route in app.routes:
    route.path_regex = CountingPattern(route.path_regex)  # type: ignore[attr-defined]
