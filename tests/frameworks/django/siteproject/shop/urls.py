"""The shop app: products by id and by slug, orders by UUID, a POST-only checkout, a failure."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST

MISSING_ORDER = uuid.UUID("00000000-0000-0000-0000-000000000404")


def product(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"id": pk})


def reviews(request: HttpRequest, slug: str) -> JsonResponse:
    return JsonResponse({"product": slug, "reviews": []})


def order(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    if order_id == MISSING_ORDER:
        raise Http404("No such order")
    return JsonResponse({"order": str(order_id)})


@require_POST
def checkout(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True}, status=201)


def boom(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("kaboom")


urlpatterns = [
    path("products/<int:pk>/", product),
    path("products/<slug:slug>/reviews/", reviews),
    path("orders/<uuid:order_id>", order),
    path("checkout", checkout),
    path("boom", boom),
]
