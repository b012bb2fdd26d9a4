"""Middleware naming the caller, as an app's session or token authentication would."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

import beacon_otel


def session_user(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """A request with an ``X-User`` header is that user's: ``set_consumer`` names it."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if user := request.headers.get("X-User"):
            beacon_otel.set_consumer(user)
        return get_response(request)

    return middleware
