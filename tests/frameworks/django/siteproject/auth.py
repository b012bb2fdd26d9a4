"""The app's own token login, after Django's AuthenticationMiddleware, and the consumer resolver
that reads what it set (``BEACON_CONSUMER_RESOLVER=siteproject.auth:consumer_of``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

import beacon_otel


@dataclass
class TokenUser:
    username: str
    is_authenticated: bool = True


class TokenLogin:
    """``X-Token: <name>`` logs the request in as ``<name>``; ``X-User`` names it with set_consumer()."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if token := request.headers.get("X-Token"):
            request.user = TokenUser(token)  # type: ignore[assignment]
        if user := request.headers.get("X-User"):
            beacon_otel.set_consumer(user)
        return self.get_response(request)


def consumer_of(request: Any) -> str | None:
    """The logged-in user's name, else the API key (the default rules step aside for a resolver)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.username}"
    return request.headers.get("X-API-Key")
