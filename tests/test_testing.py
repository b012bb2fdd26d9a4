"""The pytest plugin, used as a user uses it: a sample project's tests run by pytest in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CONFTEST = '''
import socket

import django
import pytest
from django.conf import settings

settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF="django_urls", MIDDLEWARE=[],
    SECRET_KEY="sample", USE_TZ=True,
)
django.setup()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing may leave the process: a connect anywhere fails the test."""
    def refuse(self, address):
        raise AssertionError(f"network use: connect to {address}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
'''

DJANGO_URLS = """
from django.http import JsonResponse
from django.urls import path


def article(request, pk):
    return JsonResponse({"pk": pk})


urlpatterns = [path("articles/<int:pk>/", article)]
"""

SAMPLE_TESTS = """
import asyncio

import httpx
from django.test import Client
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


class Item(BaseModel):
    price: float


def fastapi_app():
    app = FastAPI()

    @app.get("/users/{user_id}")
    def user(user_id: int):
        return {"id": user_id}

    @app.post("/items")
    def items(item: Item):
        return item

    @app.get("/boom")
    def boom():
        raise ZeroDivisionError("division by zero")

    return app


def test_fastapi_test_client(beacon_events):
    client = TestClient(beacon_events.instrument(fastapi_app()), raise_server_exceptions=False)
    client.get("/users/42", headers={"X-API-Key": "acme"})
    client.post("/items", json={})
    client.get("/boom")
    event = beacon_events.one(route="/users/{user_id}")
    assert (event["status"], event["consumer"], event["path"]) == (200, "acme", "/users/42")
    assert beacon_events.validation_fields(route="/items", status=422) == ["body.price"]
    assert beacon_events.one(route="/boom")["error"] == "ZeroDivisionError: division by zero"
    beacon_events.clear()
    assert beacon_events.events == []


def test_starlette_test_client(beacon_events):
    app = Starlette(routes=[Route("/orders/{order_id}", lambda request: PlainTextResponse("ok"))])
    TestClient(beacon_events.instrument(app)).get("/orders/7")
    assert beacon_events.one(path="/orders/7")["route"].startswith("/orders/{order_id")


def test_flask_test_client(beacon_events):
    app = Flask("sample")
    app.add_url_rule("/users/<int:user_id>", "user", lambda user_id: {"id": user_id})
    beacon_events.instrument(app).test_client().get("/users/7", headers={"Authorization": "Bearer s3cret"})
    event = beacon_events.one(route="/users/<int:user_id>")
    assert event["status"] == 200 and event["consumer"].startswith("hash_")


def test_django_test_client(beacon_events):
    beacon_events.instrument()
    Client().get("/articles/5/", HTTP_X_API_KEY="globex")
    event = beacon_events.one(path="/articles/5/")
    assert event["route"] == "/articles/<int:pk>/" and event["consumer"] == "globex"


def test_httpx_asgi_transport(beacon_events):
    async def raw_asgi(scope, receive, send):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run():
        transport = httpx.ASGITransport(app=beacon_events.instrument(raw_asgi))
        async with httpx.AsyncClient(transport=transport, base_url="http://sample") as client:
            await client.get("/missing")

    asyncio.run(run())
    assert beacon_events.one(path="/missing")["status"] == 404


def test_httpx_wsgi_transport(beacon_events):
    def raw_wsgi(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    transport = httpx.WSGITransport(app=beacon_events.instrument(raw_wsgi))
    with httpx.Client(transport=transport, base_url="http://sample") as client:
        client.post("/things")
    assert beacon_events.one(method="POST", path="/things")["status"] == 201
"""

# Apps are module-level in real projects: every test uses the same objects, in any order, some
# before any test asked for beacon_events, some with Beacon and some without.
MODULE_LEVEL_APPS = """
from django.test import Client
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

fastapi_app = FastAPI()
fastapi_app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
starlette_app = Starlette(routes=[Route("/orders/{order_id}", lambda request: PlainTextResponse("ok"))])
flask_app = Flask("sample")
flask_app.add_url_rule("/users/<int:user_id>", "user", lambda user_id: {"id": user_id})
"""

MODULE_LEVEL_TESTS = """
import pytest
from apps import Client, TestClient, fastapi_app, flask_app, starlette_app


def fastapi_served(beacon_events, n):
    TestClient(beacon_events.instrument(fastapi_app)).get(f"/users/{n}", headers={"X-API-Key": f"k{n}"})
    assert [(e["route"], e["path"], e["consumer"]) for e in beacon_events.events] == [
        ("/users/{user_id}", f"/users/{n}", f"k{n}")
    ]


def starlette_served(beacon_events, n):
    TestClient(beacon_events.instrument(starlette_app)).get(f"/orders/{n}")
    assert [e["path"] for e in beacon_events.events] == [f"/orders/{n}"]


def flask_served(beacon_events, n):
    beacon_events.instrument(flask_app).test_client().get(f"/users/{n}")
    expected = [("/users/<int:user_id>", f"/users/{n}")]
    assert [(e["route"], e["path"]) for e in beacon_events.events] == expected


def django_served(beacon_events, n):
    beacon_events.instrument()
    Client().get(f"/articles/{n}/")
    expected = [("/articles/<int:pk>/", f"/articles/{n}/")]
    assert [(e["route"], e["path"]) for e in beacon_events.events] == expected


def without_beacon(n):
    # The same apps served by tests that do not use the fixture: before, between and after.
    assert TestClient(fastapi_app).get(f"/users/{n}").status_code == 200
    assert TestClient(starlette_app).get(f"/orders/{n}").status_code == 200
    assert flask_app.test_client().get(f"/users/{n}").status_code == 200
    assert Client().get(f"/articles/{n}/").status_code == 200


SERVED = {
    "fastapi": fastapi_served,
    "starlette": starlette_served,
    "flask": flask_served,
    "django": django_served,
}
ORDER = ORDER_PLACEHOLDER


@pytest.mark.parametrize("step", range(len(ORDER)))
def test_step(request, step):
    kind, n = ORDER[step]
    if kind == "plain":
        without_beacon(n)
    else:
        SERVED[kind](request.getfixturevalue("beacon_events"), n)
"""

FAILING_TEST = """
from fastapi import FastAPI
from fastapi.testclient import TestClient


def test_expects_a_route_never_called(beacon_events):
    app = FastAPI()
    app.get("/here")(lambda: {})
    TestClient(beacon_events.instrument(app)).get("/here")
    beacon_events.one(route="/elsewhere")
"""

UNUSED_TEST = """
import sys


def test_plugin_loaded_but_unused(request):
    assert "beacon_events" in request.fixturenames or "beacon_otel.testing" in sys.modules
    assert "opentelemetry.sdk.trace" not in sys.modules
"""


def run_pytest(project: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Write ``files`` into a fresh project and run pytest there, as its developers would."""
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (project / name).write_text(textwrap.dedent(text))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300, check=False)


def test_fixture_gives_each_framework_its_events(tmp_path: Path) -> None:
    """FastAPI/Starlette TestClient, Flask and Django test clients and httpx ASGI/WSGI transports
    all give the test their events (route, status, consumer, error, validation fields), with no
    network use at all."""
    files = {"conftest.py": CONFTEST, "django_urls.py": DJANGO_URLS, "test_sample.py": SAMPLE_TESTS}
    result = run_pytest(tmp_path / "sample", files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


STEPS = [
    ("plain", 0),
    ("fastapi", 1),
    ("starlette", 1),
    ("flask", 1),
    ("django", 1),
    ("plain", 1),
    ("fastapi", 2),
    ("flask", 2),
    ("starlette", 2),
    ("django", 2),
    ("fastapi", 3),
    ("fastapi", 4),
    ("flask", 3),
    ("plain", 2),
    ("starlette", 3),
    ("django", 3),
]


def module_level_project(order: list[tuple[str, int]]) -> dict[str, str]:
    tests = MODULE_LEVEL_TESTS.replace("ORDER_PLACEHOLDER", repr(order))
    return {
        "conftest.py": CONFTEST,
        "django_urls.py": DJANGO_URLS,
        "apps.py": MODULE_LEVEL_APPS,
        "test_module_level.py": tests,
    }


def test_module_level_apps_in_every_test_in_any_order(tmp_path: Path) -> None:
    """The same module-level FastAPI, Starlette, Flask and Django apps give each test its own
    events, test after test, whatever the order, also after tests that served them without
    Beacon: the README's two-test example, for every framework."""
    for name, order in (("forward", STEPS), ("backward", STEPS[::-1])):
        result = run_pytest(tmp_path / name, module_level_project(order))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(order)} passed" in result.stdout


def test_module_level_apps_under_xdist(tmp_path: Path) -> None:
    """Under pytest-xdist each worker instruments the apps for itself: every test passes."""
    result = run_pytest(tmp_path / "xdist", module_level_project(STEPS), "-p", "xdist", "-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(STEPS)} passed" in result.stdout


def test_failed_lookup_lists_every_event(tmp_path: Path) -> None:
    """one() that finds no match fails the test with the query and every event that was made."""
    result = run_pytest(tmp_path / "sample", {"test_failing.py": FAILING_TEST})
    assert result.returncode == 1
    assert (
        "expected exactly one Beacon event with {'route': '/elsewhere'}, found 0; all events:"
        in result.stdout
    )
    assert "'route': '/here'" in result.stdout


def test_plugin_costs_nothing_until_used(tmp_path: Path) -> None:
    """Installed, the plugin loads in every pytest run but imports no OpenTelemetry SDK unless used."""
    result = run_pytest(tmp_path / "sample", {"test_unused.py": UNUSED_TEST}, "--fixtures")
    assert "beacon_events" in result.stdout and "beacon_otel" in result.stdout
    plain = run_pytest(tmp_path / "again", {"test_unused.py": UNUSED_TEST})
    assert plain.returncode == 0, plain.stdout + plain.stderr
