"""A Flask app as teams write them: blueprints, auth in before_request, errors, a streamed download.

Served by gunicorn under ``opentelemetry-instrument`` with beacon-otel's lean span source and
with the stock instrumentation (``BEACON_SERVER_SPANS=stock``): the events must be the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, abort, g, request
from opentelemetry import trace

import beacon_otel

TOKENS = {"tok-ann": "ann", "tok-bob": "bob"}

app = Flask(__name__)
api = Blueprint("api", __name__, url_prefix="/api/v1")
admin = Blueprint("admin", __name__, url_prefix="/admin")


@app.before_request
def authenticate() -> None:
    """What a login extension does: the user from a session token, named as the consumer."""
    token = request.headers.get("X-Session")
    g.user = TOKENS.get(token or "")
    if g.user:
        beacon_otel.set_consumer(g.user)


@admin.before_request
def admins_only() -> None:
    if g.user != "ann":
        abort(403)


@api.route("/orders/<int:order_id>", methods=["GET", "PUT"])
def order(order_id: int) -> dict[str, int]:
    if order_id == 0:
        raise KeyError("order 0")
    return {"id": order_id}


@api.get("/orders/<int:order_id>/items/<string:sku>")
def order_item(order_id: int, sku: str) -> dict[str, str]:
    return {"sku": sku}


@api.get("/export")
def export() -> Response:
    seconds = float(request.args.get("duration", "0.8"))

    def rows() -> Iterator[bytes]:
        for row in range(4):
            time.sleep(seconds / 4)
            yield f"{row}\n".encode()

    return Response(rows(), mimetype="text/csv")


@admin.get("/stats")
def stats() -> dict[str, int]:
    return {"users": len(TOKENS)}


@app.get("/scope")
def scope() -> dict[str, str | None]:
    """Which instrumentation made the request's span (the tests' way to tell the two apart)."""
    span = trace.get_current_span()
    made_by = getattr(span, "instrumentation_scope", None)
    return {"scope": made_by.name if made_by is not None else None}


app.register_blueprint(api)
app.register_blueprint(admin)
