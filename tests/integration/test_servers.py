"""The server matrix: every server users deploy on, zero-code and set up by hand.

Each run starts a real server process on a free port, serves ``REQUESTS`` requests over real
sockets, checks that nothing reached the strict dev ingest yet (``BEACON_FLUSH_INTERVAL=60``,
fewer events than a batch), sends SIGTERM to the server's main process and waits for it to end.
Every request must have been answered and must arrive exactly once: what was buffered at
SIGTERM is delivered on the way out. One dev ingest serves the whole module (each run asks for
its own ``/users/<n>`` numbers), and the runs go a few at a time, all before the first test
reads its result. ``-s`` prints the table of figures. docs/servers.md holds the same rows.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from tests.support.apps import APP_PATH, APPS, app_file

from .conftest import Server, clean_environ, free_port

pytestmark = pytest.mark.integration

REQUESTS = 20
PARALLEL_RUNS = 3
READY_TIMEOUT = 90.0
"""Generous: a zero-code start imports every instrumentation, on a shared 2-core machine."""
DELIVERY_TIMEOUT = 30.0
DOC = Path(__file__).resolve().parents[2] / "docs" / "servers.md"

GUNICORN = ["gunicorn", "--bind", "127.0.0.1:{port}", "--no-control-socket", "--workers", "2"]
HEALTHCHECK = ("--timeout-worker-healthcheck", "60")
APP_OF = {
    ("asgi", "zero-code"): "fastapi_app:app",
    ("asgi", "manual"): "manual_asgi:app",
    ("wsgi", "zero-code"): "flask_app:app",
    ("wsgi", "manual"): "manual_wsgi:app",
    ("django", "zero-code"): str(app_file("manage.py")),
    ("django", "manual"): str(app_file("manual_manage.py")),
}


@dataclass(frozen=True)
class ServerSpec:
    """One row of the matrix: a server command line, ``{app}`` and ``{port}`` to fill in."""

    name: str
    kind: str  # asgi, wsgi or django: which app it serves
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    stop: signal.Signals = signal.SIGTERM
    """The signal that stops it (Ctrl+C is SIGINT)."""
    recycles: bool = False
    """Workers exit during the run (``--max-requests``): they deliver before the stop signal."""


SERVERS = [
    ServerSpec("uvicorn", "asgi", ("uvicorn", "--host", "127.0.0.1", "--port", "{port}", "{app}")),
    ServerSpec(
        "uvicorn --workers 2",
        "asgi",
        # Each worker must answer the parent's health check while it imports the app and the
        # instrumentations: on a loaded 2-core machine that takes longer than the 5 s default.
        ("uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--workers", "2", *HEALTHCHECK, "{app}"),
    ),
    ServerSpec(
        "uvicorn, Ctrl+C",
        "asgi",
        ("uvicorn", "--host", "127.0.0.1", "--port", "{port}", "{app}"),
        stop=signal.SIGINT,
    ),
    ServerSpec("gunicorn sync", "wsgi", (*GUNICORN, "{app}")),
    # Workers recycled every 5 requests while the run goes on: each exiting worker delivers.
    ServerSpec(
        "gunicorn sync --max-requests 5", "wsgi", (*GUNICORN, "--max-requests", "5", "{app}"), recycles=True
    ),
    ServerSpec("gunicorn gthread", "wsgi", (*GUNICORN, "-k", "gthread", "--threads", "4", "{app}")),
    ServerSpec("gunicorn gevent", "wsgi", (*GUNICORN, "-k", "gevent", "{app}")),
    ServerSpec("gunicorn UvicornWorker", "asgi", (*GUNICORN, "-k", "uvicorn.workers.UvicornWorker", "{app}")),
    ServerSpec("hypercorn", "asgi", ("hypercorn", "--bind", "127.0.0.1:{port}", "{app}")),
    ServerSpec(
        "granian ASGI",
        "asgi",
        ("granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "{app}"),
    ),
    ServerSpec(
        "granian WSGI",
        "wsgi",
        ("granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}", "{app}"),
    ),
    ServerSpec("waitress", "wsgi", ("waitress-serve", "--host", "127.0.0.1", "--port", "{port}", "{app}")),
    ServerSpec(
        "Django runserver",
        "django",
        ("python", "{app}", "runserver", "--noreload", "127.0.0.1:{port}"),
        env=(("DJANGO_SETTINGS_MODULE", "djangoapp.settings"),),
    ),
]
SETUPS = ("zero-code", "manual")


@dataclass(frozen=True)
class Case:
    """One server in one setup."""

    spec: ServerSpec
    setup: str
    first: int
    """The first ``/users/<n>`` number of this run; each run has its own."""

    @property
    def id(self) -> str:
        return f"{self.spec.name} [{self.setup}]"

    def argv(self, port: int) -> list[str]:
        app = APP_OF[(self.spec.kind, self.setup)]
        argv = [part.format(port=port, app=app) for part in self.spec.argv]
        if self.setup == "zero-code":
            argv.insert(0, "opentelemetry-instrument")
        return argv  # found on the PATH, the venv's bin first


CASES = [
    Case(spec, setup, first=1000 * (1 + 2 * row + column))
    for row, spec in enumerate(SERVERS)
    for column, setup in enumerate(SETUPS)
]


@dataclass
class Outcome:
    """What one run produced."""

    answered: int = 0
    early: int = 0
    """Events at the ingest before SIGTERM: must be 0, or SIGTERM proved nothing."""
    arrived: collections.Counter[str] = field(default_factory=collections.Counter)
    exit_code: int | None = None
    stop_seconds: float = 0.0
    log: str = ""

    @property
    def lost(self) -> int:
        return self.answered - len(self.arrived)


def paths(case: Case) -> list[str]:
    return [f"/users/{n}" for n in range(case.first, case.first + REQUESTS)]


def arrived_for(ingest: DevIngest, case: Case) -> collections.Counter[str]:
    wanted = set(paths(case))
    return collections.Counter(e["path"] for e in ingest.events() if e["path"] in wanted)


def stop(server: Server, signum: signal.Signals) -> int | None:
    """Send ``signum`` to the server's main process, as ``kill`` or Ctrl+C would; wait for its end."""
    if signum is signal.SIGTERM:
        return server.terminate()
    assert server.process is not None
    server.process.send_signal(signum)
    try:
        return server.process.wait(60)
    except subprocess.TimeoutExpired:
        return None


_ports_used: set[int] = set()
_ports_lock = threading.Lock()


def run(case: Case, ingest: DevIngest, workdir: Path) -> Outcome:
    """Start the server, serve every request, SIGTERM it, collect what arrived."""
    slug = re.sub(r"[^a-z0-9]+", "-", case.id.lower()).strip("-")
    env = clean_environ()
    env.update(
        {
            "BEACON_INGEST_KEY": "ingest-key",
            "BEACON_INGEST_URL": ingest.base_url,
            "BEACON_FLUSH_INTERVAL": "60",
            "BEACON_SHUTDOWN_TIMEOUT": "5",
            "BEACON_STORAGE_PATH": str(workdir / f"spool-{slug}"),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "PYTHONPATH": APP_PATH,
            **dict(case.spec.env),
        }
    )
    with _ports_lock:  # runs start at once: never hand two of them the same free port
        while (port := free_port()) in _ports_used:
            pass
        _ports_used.add(port)
    server = Server(
        argv=case.argv(port),
        env=env,
        log_path=workdir / f"{slug}.log",
        port=port,
        cwd=APPS,
        ready_timeout=READY_TIMEOUT,
    )
    outcome = Outcome()
    try:
        server.start()
        for path in paths(case):
            status, _ = server.request("GET", path)
            outcome.answered += status == 200
        outcome.early = sum(arrived_for(ingest, case).values())
        started = time.monotonic()
        outcome.exit_code = stop(server, case.spec.stop)
        outcome.stop_seconds = time.monotonic() - started
        # Delivered before the process ended, or not at all: a short wait for the ingest to
        # store what it is answering is all that is allowed.
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while sum((arrived := arrived_for(ingest, case)).values()) < outcome.answered:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        outcome.arrived = arrived
    finally:
        server.kill()
        outcome.log = server.log() if server.log_path.exists() else ""
    return outcome


@pytest.fixture(scope="module")
def ingest() -> Iterator[DevIngest]:
    """One strict dev ingest for the whole matrix."""
    with DevIngest(ingest_key="ingest-key") as server:
        yield server


@pytest.fixture(scope="module")
def matrix(
    request: pytest.FixtureRequest, ingest: DevIngest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """Every selected case, run a few at a time; a table of figures is printed."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params
    ]
    workdir = tmp_path_factory.mktemp("servers")
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        futures = {case.id: pool.submit(run, case, ingest, workdir) for case in selected}
        outcomes: dict[str, Outcome] = {}
        for case_id, future in futures.items():
            try:
                outcomes[case_id] = future.result()
            except BaseException as exc:  # a server that would not start fails its own test
                outcomes[case_id] = Outcome(log=f"{type(exc).__name__}: {exc}")
    print("\nSERVERS server | setup | requests | answered | events | duplicates | lost at SIGTERM | stop s")
    for case in selected:
        o = outcomes[case.id]
        duplicates = sum(n - 1 for n in o.arrived.values())
        print(
            f"SERVERS {case.spec.name} | {case.setup} | {REQUESTS} | {o.answered} | "
            f"{sum(o.arrived.values())} | {duplicates} | {o.lost} | {o.stop_seconds:.1f}"
        )
    return outcomes


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_request_answered_and_delivered_once_through_sigterm(
    case: Case, matrix: dict[str, Outcome]
) -> None:
    """Every request answered; each one event, exactly once; nothing lost at SIGTERM."""
    outcome = matrix[case.id]
    tail = outcome.log[-4000:]
    assert outcome.answered == REQUESTS, tail
    if case.spec.recycles:
        assert outcome.early > 0, "recycled workers delivered nothing on their way out"
    else:
        assert outcome.early == 0, "delivered before SIGTERM: the run proves nothing about SIGTERM"
    assert outcome.exit_code is not None, tail
    assert outcome.arrived == collections.Counter(paths(case)), (outcome.lost, tail)


def documented_rows() -> set[tuple[str, str]]:
    """(server, setup) of every row of docs/servers.md's matrix table."""
    rows = set()
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[1] in SETUPS:
            rows.add((cells[0].strip("`"), cells[1]))
    return rows


def test_docs_table_lists_exactly_the_matrix() -> None:
    """docs/servers.md's table has one row per server and setup that this module runs."""
    assert documented_rows() == {(case.spec.name, case.setup) for case in CASES}
