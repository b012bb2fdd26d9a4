"""gevent and eventlet with TLS: Beacon imports nothing of the TLS stack while a process starts.

Green servers (gunicorn's gevent worker, eventlet's) patch ``ssl`` when a worker starts, after
``opentelemetry-instrument`` has run in the master. A module that imported ``ssl``, requests or
urllib3 by then keeps the unpatched ``SSLContext``: every HTTPS request of the app fails with
``RecursionError``, and so does Beacon's delivery to an HTTPS ingest. These tests start the real
processes: the import check under ``opentelemetry-instrument`` (Beacon on and off), then gunicorn
``-k gevent`` and eventlet's WSGI server delivering to a loopback TLS ingest while the app's own view
calls a loopback HTTPS server with requests. The certificate is made by the test and trusted
through ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from beacon_otel.spool.store import destinations

from .conftest import APPS, VENV_BIN, Server, clean_environ, free_port
from .tls_support import PlainAnswer, TlsFront, self_signed

pytestmark = pytest.mark.integration

TLS_STACK = ("ssl", "_ssl", "requests", "urllib3")
REQUESTS = 10
DELIVERY_TIMEOUT = 60.0
# opentelemetry-instrumentation-requests (a dev dependency here, for other tests) imports
# requests when it instruments: under a green worker that breaks HTTPS with or without Beacon.
WITHOUT_REQUESTS_INSTRUMENTATION = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests"}
QUIET_OTEL = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}

PROBE = """
import json, sys
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"requests", "urllib3"})))
"""


def importers(importtime: str, wanted: tuple[str, ...]) -> dict[str, set[str]]:
    """For each module of ``wanted`` first imported below a beacon_otel module: those modules.

    ``-X importtime`` prints a module after everything it imported, indented one step deeper;
    so a line's descendants are the pending lines printed before it with a deeper indent.
    """
    found: dict[str, set[str]] = collections.defaultdict(set)
    pending: list[tuple[int, str]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or line.rstrip().endswith("| imported package"):
            continue
        cell = line.rsplit("|", 1)[1]
        name = cell.strip()
        depth = len(cell) - len(cell.lstrip())
        below = [child for child_depth, child in pending if child_depth > depth]
        pending = [(d, n) for d, n in pending if d <= depth]
        pending.append((depth, name))
        if name.startswith("beacon_otel"):
            for child in below:
                if child.split(".")[0] in wanted:
                    found[child].add(name)
    return dict(found)


@pytest.mark.parametrize("enabled", ["true", "false"], ids=["beacon-on", "beacon-off"])
def test_start_up_under_opentelemetry_instrument_imports_no_tls_stack(enabled: str, tmp_path: Path) -> None:
    """Neither requests nor urllib3 is loaded at start-up, and no Beacon module imports ``ssl``.

    (The standard library's asyncio imports ``ssl`` under OpenTelemetry alone; that one is
    harmless, as the gevent test below shows. Beacon's own modules must not.)
    """
    env = clean_environ()
    env.update(
        {
            "BEACON_ENABLED": enabled,
            "BEACON_INGEST_KEY": "bk_start_up",
            "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
            **QUIET_OTEL,
            **WITHOUT_REQUESTS_INSTRUMENTATION,
        }
    )
    result = subprocess.run(
        [str(VENV_BIN / "opentelemetry-instrument"), "python", "-X", "importtime", "-c", PROBE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert any(name.endswith(".autorun") for name in loaded), result.stderr[-3000:]  # Beacon's distro ran
    assert ("beacon-otel: sending to" in result.stderr) == (enabled == "true"), result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert importers(result.stderr, TLS_STACK) == {}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DevIngest, TlsFront, TlsFront]]:
    """The CA file, a dev ingest behind TLS, and an HTTPS server for the app to call."""
    certificate = self_signed(tmp_path_factory.mktemp("tls"))
    with (
        DevIngest(ingest_key="bk_green") as ingest,
        TlsFront(certificate, ingest.port) as ingest_front,
        PlainAnswer() as upstream,
        TlsFront(certificate, upstream.port) as upstream_front,
    ):
        yield certificate.cert, ingest, ingest_front, upstream_front


SERVE = {
    "gunicorn -k gevent": [
        "gunicorn", "--bind", "127.0.0.1:{port}", "--no-control-socket", "--workers", "1",
        "-k", "gevent", "green_https_app:app",
    ],
    # gunicorn 27 dropped its eventlet worker: eventlet's own server, patched as the worker did.
    "eventlet.wsgi": ["python", "eventlet_serve.py", "{port}"],
}  # fmt: skip


@pytest.mark.parametrize("worker", SERVE)
def test_green_server_delivers_over_https_while_the_app_calls_https(
    worker: str, tls: tuple[Path, DevIngest, TlsFront, TlsFront], tmp_path: Path
) -> None:
    """Every view's own HTTPS call succeeds, and every request arrives once at the TLS ingest."""
    ca, ingest, ingest_front, upstream_front = tls
    first = 100 * (1 + list(SERVE).index(worker))
    paths = [f"/users/{n}" for n in range(first, first + REQUESTS)]
    port = free_port()
    env = clean_environ()
    env.update(
        {
            "BEACON_INGEST_KEY": "bk_green",
            "BEACON_INGEST_URL": ingest_front.url,
            "BEACON_FLUSH_INTERVAL": "0.5",
            "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
            "REQUESTS_CA_BUNDLE": str(ca),
            "TEST_UPSTREAM_URL": upstream_front.url + "/ping",
            "PYTHONPATH": str(APPS),
            **QUIET_OTEL,
            **WITHOUT_REQUESTS_INSTRUMENTATION,
        }
    )
    argv = [str(VENV_BIN / "opentelemetry-instrument"), *SERVE[worker]]
    argv = [part.format(port=port) for part in argv]
    server = Server(argv=argv, env=env, log_path=tmp_path / "server.log", port=port, ready_timeout=90)
    try:
        server.start()
        answers = [server.request("GET", path) for path in paths]
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while (
            arrived := collections.Counter(e["path"] for e in ingest.events() if e["path"] in paths)
        ).total() < REQUESTS:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        server.terminate()
        log = server.log()
    finally:
        server.kill()
    assert [status for status, _ in answers] == [200] * REQUESTS, (answers[:2], log[-3000:])
    assert arrived == collections.Counter(paths), log[-3000:]


CHECK_INSTRUMENTED = """
import json
from requests.sessions import Session
print(json.dumps(hasattr(Session.send, "__wrapped__")))
"""


def test_a_spool_backlog_at_start_waits_for_the_instrumentations(tmp_path: Path) -> None:
    """A spool left by an earlier run starts the delivery thread during start-up; its first import
    of requests waits for the instrumentors, so OpenTelemetry's requests instrumentation (which
    imports requests too) is never broken by a half-imported module; nothing of the backlog is lost."""
    with DevIngest(ingest_key="bk_backlog") as ingest:
        env = clean_environ() | {
            "BEACON_INGEST_KEY": "bk_backlog",
            "BEACON_INGEST_URL": ingest.base_url,
            "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
            "PYTHONPATH": str(APPS),
            **QUIET_OTEL,
        }
        for run in range(3):
            writer = [
                sys.executable,
                str(APPS / "spool_client.py"),
                "write",
                ingest.url,
                "bk_backlog",
                "2",
                "5",
                "0",
            ]
            subprocess.run(writer, env=env, check=True, capture_output=True, timeout=60)
            result = subprocess.run(
                [str(VENV_BIN / "opentelemetry-instrument"), "python", "-c", CHECK_INSTRUMENTED],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert "Instrumenting of requests failed" not in result.stderr, result.stderr
            assert "Failed to auto initialize" not in result.stderr, result.stderr
            assert json.loads(result.stdout.strip().splitlines()[-1]) is True, (run, result.stderr)
        # Short-lived processes: what one did not replay before exiting waits for the next one.
        delivered = len(ingest.events())
    waiting = sum(state.events for state in destinations(tmp_path / "spool"))
    assert delivered + waiting == 30
