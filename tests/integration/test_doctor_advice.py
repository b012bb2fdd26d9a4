"""Every piece of advice `beacon-otel doctor` gives, followed, and the events then arriving.

Doctor runs as a user runs it, in a subprocess with the app's environment and directory; the
advice is read from its output and done as written; then the app is served by a real server
under ``opentelemetry-instrument`` and its requests must reach the strict dev ingest.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from tests.conftest import requires
from tests.support.apps import app_file

from .conftest import VENV_BIN, Launch, clean_environ, free_port

pytestmark = pytest.mark.integration

KEY = "doctor-key"
UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "fastapi_app:app"]
GUNICORN_DJANGO = ["gunicorn", "--workers", "1", "--bind", "127.0.0.1:{port}", "djangoapp.wsgi"]


def doctor(cwd: Path, **env: str) -> tuple[int, list[str]]:
    """`beacon-otel doctor` in ``cwd`` with only ``env`` set; its exit status and report lines."""
    result = subprocess.run(
        [sys.executable, "-m", "beacon_otel.cli", "doctor"],
        env={**clean_environ(), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout.splitlines()


def findings(lines: list[str], level: str) -> list[str]:
    return [line.split(None, 1)[1] for line in lines if line.startswith(f"  {level} ")]


def served_events(launch: Launch, argv: list[str], env: dict[str, str], paths: list[str]) -> list[int]:
    """Serve the app zero-code, request ``paths``; the statuses, after a clean SIGTERM."""
    server = launch(argv, {"BEACON_INGEST_KEY": KEY, "BEACON_FLUSH_INTERVAL": "0.2", **env})
    statuses = [server.request("GET", path)[0] for path in paths]
    assert server.terminate() in (0, -15), server.log()
    return statuses


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    with DevIngest(ingest_key=KEY) as server:
        yield server


def test_probe_is_not_a_rejected_batch(ingest: DevIngest, tmp_path: Path) -> None:
    """Doctor's key check leaves the dev ingest with nothing rejected: summary exits 0."""
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=ingest.base_url)
    assert status == 0, lines
    assert any("the key is accepted" in line for line in findings(lines, "ok")), lines
    stats = ingest.stats()
    assert (stats["batches_rejected"], stats["rejections"]) == (0, [])
    summary = subprocess.run(
        [sys.executable, "-m", "beacon_otel.cli", "summary", "--url", ingest.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert summary.returncode == 0, summary.stdout + summary.stderr
    assert "rejected: 0" in summary.stdout


def test_wrong_key_probe_is_still_refused(ingest: DevIngest, tmp_path: Path) -> None:
    """The probe header changes what the dev ingest counts, never what it accepts."""
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY="not-the-key", BEACON_INGEST_URL=ingest.base_url)
    assert status == 1
    assert "refused the key" in findings(lines, "FAIL")[0]


def test_misspelt_setting_renamed_as_told(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """BEACON_CONSUMER_HEADR: doctor names the setting meant; renamed so, it takes effect."""
    env = {"BEACON_INGEST_URL": ingest.base_url, "BEACON_STORAGE_PATH": str(tmp_path / "spool")}
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_CONSUMER_HEADR="X-Tenant", **env)
    assert status == 1
    (failure,) = findings(lines, "FAIL")
    advice = re.search(r"^(BEACON_\w+) is not a Beacon setting .*did you mean (BEACON_\w+)\?$", failure)
    assert advice is not None, lines
    env[advice.group(2)] = "X-Tenant"
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, **env)
    assert status == 0, lines
    server = launch(UVICORN, {"BEACON_INGEST_KEY": KEY, "BEACON_FLUSH_INTERVAL": "0.2", **env})
    assert server.request("GET", "/users/1", {"X-Tenant": "acme", "X-API-Key": "key-1"})[0] == 200
    assert server.terminate() in (0, -15), server.log()
    [event] = ingest.wait_for_events(1, timeout=60)
    assert (event["path"], event["consumer"]) == ("/users/1", "acme")


def test_missing_key_set_as_told(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """No BEACON_INGEST_KEY: doctor says to set it; set, doctor passes and the events arrive."""
    env = {"BEACON_INGEST_URL": ingest.base_url, "BEACON_STORAGE_PATH": str(tmp_path / "spool")}
    status, lines = doctor(tmp_path, **env)
    assert status == 1
    assert findings(lines, "FAIL")[0].startswith("BEACON_INGEST_KEY is not set: Beacon is off (set it")
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, **env)
    assert status == 0, lines
    assert served_events(launch, UVICORN, env, ["/users/2"]) == [200]
    assert [e["path"] for e in ingest.wait_for_events(1, timeout=60)] == ["/users/2"]


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the dev ingest exited"
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.05)
    pytest.fail(f"nothing listening on {port}")


def test_start_the_dev_ingest_as_told(launch: Launch, tmp_path: Path) -> None:
    """Nothing listening: doctor gives the command with the port it was pointed at; run as
    written, the dev ingest listens there, doctor passes and the app's events arrive."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=url)
    assert status == 1
    (failure,) = findings(lines, "FAIL")
    advice = re.search(r"start it with: (.+)$", failure)
    assert advice is not None and advice.group(1) == f"beacon-otel dev-ingest --port {port}", failure
    command = shlex.split(advice.group(1))
    process = subprocess.Popen(
        [str(VENV_BIN / command[0]), *command[1:]],
        cwd=tmp_path,  # its default database file lands here
        env=clean_environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=url)
        assert status == 0, lines
        env = {"BEACON_INGEST_URL": url, "BEACON_STORAGE_PATH": str(tmp_path / "spool")}
        assert served_events(launch, UVICORN, env, ["/users/1", "/users/2"]) == [200, 200]
        summary = subprocess.run(
            [sys.executable, "-m", "beacon_otel.cli", "summary", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert summary.returncode == 0, summary.stdout + summary.stderr
        assert re.search(r"/users/\{user_id\}\s+2\b", summary.stdout), summary.stdout
    finally:
        process.terminate()
        process.wait(30)


def test_django_settings_module_as_told(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """A Django project without DJANGO_SETTINGS_MODULE: doctor fails and names the module from
    manage.py; unset, every request is a 500; set as told, requests succeed and arrive."""
    env = {"BEACON_INGEST_URL": ingest.base_url, "BEACON_STORAGE_PATH": str(tmp_path / "spool")}
    status, lines = doctor(app_file("manage.py").parent, BEACON_INGEST_KEY=KEY, **env)
    assert status == 1
    (failure,) = findings(lines, "FAIL")
    advice = re.search(r"set (DJANGO_SETTINGS_MODULE)=([\w.]+) \(from manage.py\)$", failure)
    assert advice is not None, failure
    assert served_events(launch, GUNICORN_DJANGO, env, ["/users/1"]) == [500]  # what doctor warns of
    ingest.reset()
    env[advice.group(1)] = advice.group(2)
    status, lines = doctor(app_file("manage.py").parent, BEACON_INGEST_KEY=KEY, **env)
    assert status == 0, lines
    assert served_events(launch, GUNICORN_DJANGO, env, ["/users/1", "/users/2"]) == [200, 200]
    events = ingest.wait_for_events(2, timeout=60)
    assert sorted((e["route"], e["status"]) for e in events) == [("/users/<int:pk>", 200)] * 2


@requires("fastapi", "0.142")  # FastAPI's native telemetry
@pytest.mark.parametrize("exporter", [None, "console"])
def test_fastapi_native_telemetry_one_span_and_events(
    launch: Launch, ingest: DevIngest, tmp_path: Path, exporter: str | None
) -> None:
    """FastAPI 0.142+: doctor warns of nothing; zero-code, with or without an exporter, each
    request is one SERVER span (the console shows one) and one event."""
    env = {"BEACON_INGEST_URL": ingest.base_url, "BEACON_STORAGE_PATH": str(tmp_path / "spool")}
    if exporter:
        env["OTEL_TRACES_EXPORTER"] = exporter
    status, lines = doctor(tmp_path, BEACON_INGEST_KEY=KEY, **env)
    assert [line for line in findings(lines, "warn") if "FastAPI" in line] == [], lines
    assert status == 0, lines
    server = launch(UVICORN, {"BEACON_INGEST_KEY": KEY, "BEACON_FLUSH_INTERVAL": "0.2", **env})
    for path in ("/users/1", "/users/2"):
        assert server.request("GET", path)[0] == 200
    events = ingest.wait_for_events(2, timeout=60)
    assert server.terminate() in (0, -15), server.log()
    assert sorted(e["path"] for e in events) == ["/users/1", "/users/2"]
    if exporter:
        assert server.log().count('"kind": "SpanKind.SERVER"') == 2, server.log()
