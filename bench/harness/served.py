"""The apps the real-server benchmark serves: uvicorn, gunicorn and Django load them from here.

Each is a 42-route app (``/r{i}/items/{item_id}``, every route parametrised, declared in order) so
that a request to the last route pays for a realistic route table. ``BENCH_OBSERVER`` says what
the app wires in itself, as its users would in code:

- ``none``: nothing (the bare app, or an app run under ``opentelemetry-instrument``, which
  instruments it from outside);
- ``beaconhq``: beaconhq 0.2's middleware, shipping to ``BENCH_INGEST_URL``;
- ``apitally``: Apitally 1.0, its OTLP going to ``BENCH_SINK_URL``.

Servers load ``fastapi_app()``, ``flask_app()`` and ``django_app()`` as factories, so each worker
builds its app after any auto-instrumentation is in (it replaces ``FastAPI`` and ``Flask``).
Django reads its settings from this module too (``DJANGO_SETTINGS_MODULE=bench.harness.served``),
set before the server imports anything, as the auto-run Django instrumentation expects.
"""

from __future__ import annotations

import os
from typing import Any

from bench.harness import apps

ROUTES = 42
LAST_ROUTE_PATH = f"/r{ROUTES - 1}/items/7"
"""What every benchmark request asks for: the last route, after the app has tried all others."""
INGEST_KEY = "bench-ingest-key"
APITALLY_TOKEN = "apt_" + "b" * 24  # the format Apitally 1.0 checks; its OTLP goes to the local sink


def _record_gc_pauses() -> None:
    """With ``BENCH_GC_LOG=PATH``, each worker appends its garbage collections' pauses there at exit.

    A diagnostic for tail latency: one line per worker, ``pid gen0 gen1 gen2 max_ms total_ms``.
    """
    path = os.environ.get("BENCH_GC_LOG")
    if not path:
        return
    import atexit
    import gc
    import time

    counts = [0, 0, 0]
    pauses: list[float] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            counts[info["generation"]] += 1
            pauses.append(time.perf_counter() - started[0])

    def dump() -> None:
        with open(path, "a") as log:
            worst = max(pauses, default=0.0) * 1000
            log.write(f"{os.getpid()} {counts[0]} {counts[1]} {counts[2]} {worst:.2f} {sum(pauses) * 1000:.1f}\n")

    gc.callbacks.append(callback)
    atexit.register(dump)


_record_gc_pauses()


def _observer() -> str:
    return os.environ.get("BENCH_OBSERVER", "none")


def _beaconhq_client() -> Any:
    from beaconhq import BeaconClient

    return BeaconClient(ingest_key=INGEST_KEY, ingest_url=os.environ["BENCH_INGEST_URL"])


def _apitally_settings() -> dict[str, Any]:
    return {"write_token": APITALLY_TOKEN, "otlp_endpoint": os.environ["BENCH_SINK_URL"]}


def fastapi_app() -> Any:
    """The FastAPI app, with the observer ``BENCH_OBSERVER`` names."""
    app = apps.sized_app("fastapi", ROUTES)
    observer = _observer()
    if observer == "beaconhq":
        from beaconhq.integrations.asgi import BeaconASGIMiddleware, enable_fastapi_validation_capture

        app.add_middleware(BeaconASGIMiddleware, client=_beaconhq_client(), consumer_header="x-api-key")
        enable_fastapi_validation_capture(app)
    elif observer == "apitally":
        import apitally.fastapi

        apitally.fastapi.init(app, **_apitally_settings())
    return app


def flask_app() -> Any:
    """The Flask app, with the observer ``BENCH_OBSERVER`` names."""
    app = apps.sized_app("flask", ROUTES)
    observer = _observer()
    if observer == "beaconhq":
        from beaconhq.integrations.flask import init_flask

        init_flask(app, _beaconhq_client(), consumer_header="X-API-Key")
    elif observer == "apitally":
        import apitally.flask

        apitally.flask.init(app, **_apitally_settings())
    return app


def django_app() -> Any:
    """Django's WSGI handler for the settings below."""
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


# -- Django settings (read when Django first needs them, in the worker) -------------------------

if os.environ.get("DJANGO_SETTINGS_MODULE") == __name__:
    DEBUG = False
    ALLOWED_HOSTS = ["*"]
    USE_TZ = True
    INSTALLED_APPS: list[str] = []
    ROOT_URLCONF = __name__
    MIDDLEWARE: list[str] = []
    urlpatterns = apps.sized_app("django", ROUTES).urlpatterns
    if _observer() == "beaconhq":
        MIDDLEWARE.append("beaconhq.integrations.django.BeaconDjangoMiddleware")
        BEACON_CLIENT = _beaconhq_client()
        BEACON_CONSUMER_HEADER = "X-API-Key"
    elif _observer() == "apitally":
        import apitally.django

        apitally.django.init(**_apitally_settings())  # at the end of the settings, as its guide says
