"""Zero-code auto-run: real servers under opentelemetry-instrument, beside an OTLP exporter.

Each run serves a fixed list of requests, then gets SIGTERM. BEACON_FLUSH_INTERVAL=60 and
fewer requests than a batch mean that only the shutdown flush can deliver Beacon's events.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.devingest import DevIngest
from tests.support.apps import APP_PATH, app_file

from .conftest import Launch, OtlpReceiver, ReceivedSpan, Server

pytestmark = pytest.mark.integration

API_KEY = "key-ABC123-secret"
TOKEN = "tok-XYZ789-secret"
AUTH_CONSUMER = "hash_" + hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()[:12]
WITH_KEY = {"X-API-Key": API_KEY}
WITH_TOKEN = {"Authorization": f"Bearer {TOKEN}"}
WITH_USER = {**WITH_KEY, "X-User": "user-3"}  # the app's auth code calls set_consumer("user-3")


@dataclass(frozen=True)
class Call:
    """One request and the Beacon event it must become."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    route: str = ""
    status: int = 200
    consumer: str | None = None
    error: str | None = None


FASTAPI_CALLS = [
    Call("GET", "/users/1", WITH_KEY, route="/users/{user_id}", consumer=API_KEY),
    Call("GET", "/users/2", WITH_TOKEN, route="/users/{user_id}", consumer=AUTH_CONSUMER),
    Call("GET", "/users/3", WITH_USER, route="/users/{user_id}", consumer="user-3"),
    Call("GET", "/boom", route="/boom", status=500, error="RuntimeError: kaboom"),
    Call(
        "POST",
        "/items",
        {"Content-Type": "application/json"},
        b'{"name": "pen"}',
        route="/items",
        status=422,
    ),
    Call("GET", "/api/orders/5", WITH_KEY, route="/api/orders/{order_id}", consumer=API_KEY),
    Call("GET", "/nope", route="/nope", status=404),
]
FLASK_CALLS = [
    Call("GET", "/users/1", WITH_KEY, route="/users/<int:user_id>", consumer=API_KEY),
    Call("GET", "/users/2", WITH_TOKEN, route="/users/<int:user_id>", consumer=AUTH_CONSUMER),
    Call("GET", "/users/3", WITH_USER, route="/users/<int:user_id>", consumer="user-3"),
    Call("GET", "/boom", route="/boom", status=500, error="RuntimeError: kaboom"),
    Call("GET", "/nope", route="/nope", status=404),
]
DJANGO_CALLS = [
    Call("GET", "/users/1", WITH_KEY, route="/users/<int:pk>", consumer=API_KEY),
    Call("GET", "/users/2", WITH_TOKEN, route="/users/<int:pk>", consumer=AUTH_CONSUMER),
    Call("GET", "/users/3", WITH_USER, route="/users/<int:pk>", consumer="user-3"),
    Call("GET", "/boom", route="/boom", status=500, error="RuntimeError: kaboom"),
    Call("GET", "/nope", route="/nope", status=404),
]

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "fastapi_app:app"]
GUNICORN = ["gunicorn", "--workers", "2", "--bind", "127.0.0.1:{port}", "--no-control-socket"]
FLASK = [*GUNICORN, "flask_app:app"]
DJANGO = [*GUNICORN, "djangoapp.wsgi"]
RUNSERVER = ["python", str(app_file("manage.py")), "runserver", "--noreload", "127.0.0.1:{port}"]
DJANGO_ENV = {"DJANGO_SETTINGS_MODULE": "djangoapp.settings"}


@dataclass
class Run:
    """What one server run produced."""

    events: list[dict[str, Any]]
    spans: list[ReceivedSpan]
    log: str
    pids: collections.Counter[int]
    """Requests to /slow served by each worker pid."""


def autorun_env(
    ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path, **overrides: str | None
) -> dict[str, str | None]:
    """Beacon with only its key and URL set, beside an OTLP/HTTP exporter capturing credentials."""
    env: dict[str, str | None] = {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,  # a base URL: /v1/ingest is appended
        "BEACON_FLUSH_INTERVAL": "60",
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": f"run-{uuid.uuid4().hex[:8]}",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization,x-api-key",
    }
    env.update(overrides)
    return env


def serve(
    launch: Launch,
    argv: list[str],
    env: dict[str, str | None],
    calls: list[Call],
    ingest: DevIngest,
    otlp: OtlpReceiver,
    *,
    spread_over_workers: int = 0,
    sampled: bool = True,
) -> Run:
    """Start, send ``calls`` (and spread /slow over the workers), SIGTERM, collect what arrived.

    Stock OpenTelemetry loses the spans still buffered when SIGTERM ends uvicorn or runserver
    (no atexit), so when the requests are sampled the run waits for their server spans to
    reach the receiver first: the comparison is about what is exported, not about shutdown.
    """
    service = env["OTEL_SERVICE_NAME"]
    assert service is not None
    server = launch(argv, env)
    for call in calls:
        status, _ = server.request(call.method, call.path, call.headers, call.body)
        assert status == call.status, (call, server.log())
    pids = spread_requests(server, spread_over_workers) if spread_over_workers else collections.Counter()
    if sampled:
        otlp.wait_for_server_spans(service, len(calls))
    # Nothing can have been delivered yet: no full batch, and the interval is a minute away.
    assert ingest.stats()["batches_accepted"] == 0
    server.terminate()
    return Run(ingest.events(), otlp.spans(service), server.log(), pids)


def spread_requests(server: Server, workers: int) -> collections.Counter[int]:
    """Send concurrent slow requests until every worker has served some; counts them by pid."""
    pids: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def one() -> None:
        status, body = server.request("GET", "/slow")
        assert status == 200
        with lock:
            pids[json.loads(body)["pid"]] += 1

    for _ in range(10):  # bounded: at most 40 requests, below one batch
        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        if len(pids) >= workers:
            break
    assert len(pids) >= workers, f"only workers {pids} served requests"
    return pids


def slow_requests(run: Run) -> int:
    return sum(1 for event in run.events if event["path"] == "/slow")


def assert_events(run: Run, calls: list[Call]) -> None:
    """One event per request, each with the expected route, status, consumer and error."""
    events = [event for event in run.events if event["path"] != "/slow"]
    assert len(events) == len(calls), events
    by_request = {(event["method"], event["path"]): event for event in events}
    for call in calls:
        event = by_request[(call.method, call.path)]
        expected = {
            "route": call.route,
            "status": call.status,
            "consumer": call.consumer,
            "error": call.error,
        }
        assert {key: event[key] for key in expected} == expected, event


def server_spans(run: Run) -> list[ReceivedSpan]:
    return [span for span in run.spans if span.is_server]


def signatures(run: Run) -> collections.Counter[tuple[Any, ...]]:
    """What an OTLP backend sees of each span, less timings, ids and the redacted values."""
    return collections.Counter(
        (
            span.name,
            span.kind,
            span.attributes.get("http.route"),
            span.attributes.get("http.status_code") or span.attributes.get("http.response.status_code"),
            tuple(sorted(span.attributes)),
        )
        for span in run.spans
        if "/slow" not in (span.attributes.get("http.target"), span.attributes.get("url.path"))
    )


def credential_values(run: Run) -> list[tuple[str, str]]:
    """(attribute, value) pairs in which a raw credential shows up."""
    found = []
    for span in run.spans:
        for key, value in span.attributes.items():
            if any(secret in str(value) for secret in (API_KEY, TOKEN)):
                found.append((key, str(value)))
    return found


STARTED = "INFO beacon-otel: sending to "


def beacon_lines(log: str) -> list[str]:
    """Beacon's lines besides the one at start, which says where events go."""
    return [line for line in log.splitlines() if "beacon-otel" in line and STARTED not in line]


def started_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if STARTED in line]


# -- FastAPI under uvicorn -------------------------------------------------------------------


def test_fastapi_uvicorn_events_beside_otlp(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    """uvicorn + FastAPI: one event per request; OTLP gets the same spans as without Beacon."""
    run = serve(launch, UVICORN, autorun_env(ingest, otlp, tmp_path), FASTAPI_CALLS, ingest, otlp)
    assert_events(run, FASTAPI_CALLS)
    items = next(event for event in run.events if event["path"] == "/items")
    assert {"field": "body.price", "message": "Field required", "type": "missing"} in items[
        "validation_errors"
    ]
    assert beacon_lines(run.log) == []
    # One line at start per process, naming the ingest and the spool, never the key.
    (started,) = started_lines(run.log)
    assert f"sending to {ingest.url}, spool at " in started
    assert "ingest-key" not in started
    assert credential_values(run) == []

    with DevIngest() as unused:
        env = autorun_env(unused, otlp, tmp_path, BEACON_ENABLED="false")
        baseline = serve(launch, UVICORN, env, FASTAPI_CALLS, unused, otlp)
        assert unused.events() == []
    assert len(server_spans(run)) == len(FASTAPI_CALLS)
    assert signatures(run) == signatures(baseline)
    # The baseline ships the raw credentials: the capture settings did capture them.
    assert credential_values(baseline)


@pytest.mark.parametrize(
    ("argv", "calls", "extra_env"),
    [
        pytest.param(UVICORN, FASTAPI_CALLS, {}, id="fastapi-uvicorn"),
        pytest.param(FLASK, FLASK_CALLS, {}, id="flask-gunicorn"),
        pytest.param(DJANGO, DJANGO_CALLS, DJANGO_ENV, id="django-gunicorn"),
    ],
)
def test_sampled_out_requests_still_counted(
    launch: Launch,
    ingest: DevIngest,
    otlp: OtlpReceiver,
    tmp_path: Path,
    argv: list[str],
    calls: list[Call],
    extra_env: dict[str, str],
) -> None:
    """traceidratio 0: OTLP gets no span at all, Beacon still gets every request, consumers too."""
    sampling = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    env = autorun_env(ingest, otlp, tmp_path, **sampling, **extra_env)
    run = serve(launch, argv, env, calls, ingest, otlp, sampled=False)
    assert_events(run, calls)
    assert run.spans == []


def test_missing_key_warns_once_and_the_app_runs(launch: Launch, otlp: OtlpReceiver, tmp_path: Path) -> None:
    """No BEACON_INGEST_KEY: one WARNING naming it; the app and its OTLP export work as usual."""
    with DevIngest() as ingest:
        env = autorun_env(ingest, otlp, tmp_path, BEACON_INGEST_KEY=None)
        run = serve(launch, UVICORN, env, FASTAPI_CALLS[:1], ingest, otlp)
        assert ingest.events() == []
    lines = beacon_lines(run.log)
    assert len(lines) == 1 and "BEACON_INGEST_KEY is not set" in lines[0], run.log
    assert len(server_spans(run)) == 1


def test_consumer_resolver_named_in_the_environment(
    launch: Launch, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    """BEACON_CONSUMER_RESOLVER under auto-run: the resolver sees what the app set on the request."""
    with DevIngest() as ingest:
        env = autorun_env(ingest, otlp, tmp_path, BEACON_CONSUMER_RESOLVER="fastapi_app:tenant_of")
        calls = [
            Call(
                "GET",
                "/whoami",
                {"X-Tenant-Name": "acme", "X-API-Key": "key-1"},
                route="/whoami",
                consumer="acme",
            ),
            Call("GET", "/whoami", route="/whoami", consumer="anonymous"),
        ]
        run = serve(launch, UVICORN, env, calls, ingest, otlp)
    assert sorted(e["consumer"] for e in run.events) == ["acme", "anonymous"]


def test_on_error_named_in_the_environment(launch: Launch, otlp: OtlpReceiver, tmp_path: Path) -> None:
    """BEACON_ON_ERROR under auto-run: a refused key reaches the callback, once per batch."""
    failure_log = tmp_path / "failures.log"
    with DevIngest(ingest_key="the-right-key") as ingest:
        env = autorun_env(
            ingest,
            otlp,
            tmp_path,
            BEACON_ON_ERROR="fastapi_app:record_failure",
            TEST_FAILURE_LOG=str(failure_log),
        )
        run = serve(launch, UVICORN, env, FASTAPI_CALLS[:2], ingest, otlp)
        assert ingest.stats()["batches_rejected"] == 1
    assert run.events == []
    assert failure_log.read_text().splitlines() == ["DeliveryError rejected 401"]


def test_bad_setting_logs_one_error_and_the_app_runs(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    """A bad BEACON_* value: one line naming the setting; the app serves, Beacon stays off."""
    env = autorun_env(ingest, otlp, tmp_path, BEACON_INGEST_URL="http://ingest.example.com")
    run = serve(launch, UVICORN, env, FASTAPI_CALLS[:1], ingest, otlp)
    assert ingest.events() == []
    lines = beacon_lines(run.log)
    assert len(lines) == 1 and "BEACON_INGEST_URL" in lines[0], run.log
    assert len(server_spans(run)) == 1


def test_misspelt_settings_named_in_one_warning(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    """Unknown BEACON_* variables: one WARNING naming each with the setting it likely meant."""
    env = autorun_env(
        ingest, otlp, tmp_path, BEACON_INGST_URL="https://elsewhere.example", BEACON_FLUSH_INTERVL="1"
    )
    run = serve(launch, UVICORN, env, FASTAPI_CALLS[:1], ingest, otlp)
    assert_events(run, FASTAPI_CALLS[:1])  # the correctly spelt settings still apply
    (line,) = beacon_lines(run.log)
    assert "BEACON_FLUSH_INTERVL (did you mean BEACON_FLUSH_INTERVAL?)" in line
    assert "BEACON_INGST_URL (did you mean BEACON_INGEST_URL?)" in line
    assert "elsewhere.example" not in run.log  # names only: a value may be a credential


# -- beside opentelemetry-distro ---------------------------------------------------------------


@pytest.mark.parametrize(
    "chosen",
    [
        pytest.param({}, id="entry-point-order"),
        pytest.param(
            {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "beacon_otel"},
            id="their-distro-our-configurator",
        ),
        pytest.param(
            {"OTEL_PYTHON_DISTRO": "beacon_otel", "OTEL_PYTHON_CONFIGURATOR": "configurator"},
            id="our-distro-their-configurator",
        ),
    ],
)
def test_fastapi_beside_opentelemetry_distro(
    launch: Launch,
    ingest: DevIngest,
    otlp: OtlpReceiver,
    tmp_path: Path,
    distro_overlay: Path,
    chosen: dict[str, str],
) -> None:
    """With opentelemetry-distro installed too, whichever distro wins, Beacon and OTLP both work.

    With nothing chosen, entry-point order decides; here the overlay comes first on sys.path,
    so opentelemetry-distro's distro and configurator both win and only the pre-instrument
    hook is Beacon's.
    """
    env = autorun_env(ingest, otlp, tmp_path, PYTHONPATH=f"{distro_overlay}{os.pathsep}{APP_PATH}", **chosen)
    run = serve(launch, UVICORN, env, FASTAPI_CALLS, ingest, otlp)
    assert_events(run, FASTAPI_CALLS)
    assert credential_values(run) == []
    assert beacon_lines(run.log) == []

    with DevIngest() as unused:
        # The baseline is stock OpenTelemetry: opentelemetry-distro chosen, Beacon off.
        stock = {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"}
        env = autorun_env(
            unused,
            otlp,
            tmp_path,
            PYTHONPATH=f"{distro_overlay}{os.pathsep}{APP_PATH}",
            BEACON_ENABLED="false",
            **stock,
        )
        baseline = serve(launch, UVICORN, env, FASTAPI_CALLS, unused, otlp)
    assert signatures(run) == signatures(baseline)


def test_beacon_survives_opentelemetry_distro_defaults(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path, distro_overlay: Path
) -> None:
    """opentelemetry-distro's default (OTLP over gRPC, not installed) no longer stops Beacon.

    Its distro sets the default, the SDK set-up fails on the missing exporter, and Beacon's
    configurator logs that once and carries on with Beacon alone.
    """
    env = {
        key: value for key, value in autorun_env(ingest, otlp, tmp_path).items() if key.startswith("BEACON_")
    }
    env.update(
        PYTHONPATH=f"{distro_overlay}{os.pathsep}{APP_PATH}",
        OTEL_PYTHON_DISTRO="distro",
        OTEL_PYTHON_CONFIGURATOR="beacon_otel",
        OTEL_SERVICE_NAME="grpc-default",
    )
    run = serve(launch, UVICORN, env, FASTAPI_CALLS, ingest, otlp, sampled=False)
    assert_events(run, FASTAPI_CALLS)
    lines = beacon_lines(run.log)
    assert len(lines) == 1 and "otlp_proto_grpc" in lines[0], run.log


# -- Flask and Django under gunicorn ------------------------------------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["fork-per-worker", "preload"])
def test_flask_gunicorn_two_workers(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path, preload: bool
) -> None:
    """gunicorn -w 2 (with and without --preload): every worker's events arrive at SIGTERM."""
    argv = [*FLASK[:-1], "--preload", FLASK[-1]] if preload else FLASK
    run = serve(
        launch, argv, autorun_env(ingest, otlp, tmp_path), FLASK_CALLS, ingest, otlp, spread_over_workers=2
    )
    assert_events(run, FLASK_CALLS)
    assert len(run.pids) == 2
    assert slow_requests(run) == sum(run.pids.values())
    assert all(event["route"] == "/slow" for event in run.events if event["path"] == "/slow")
    assert credential_values(run) == []
    assert beacon_lines(run.log) == []
    if preload:
        return
    with DevIngest() as unused:
        env = autorun_env(unused, otlp, tmp_path, BEACON_ENABLED="false")
        baseline = serve(launch, FLASK, env, FLASK_CALLS, unused, otlp)
    assert len([s for s in server_spans(run) if s.attributes.get("http.route") != "/slow"]) == 5
    assert signatures(run) == signatures(baseline)


def test_django_gunicorn(launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path) -> None:
    """gunicorn + Django (WSGI): events with Django's route templates; OTLP as without Beacon."""
    env = autorun_env(ingest, otlp, tmp_path, **DJANGO_ENV)
    run = serve(launch, DJANGO, env, DJANGO_CALLS, ingest, otlp)
    assert_events(run, DJANGO_CALLS)
    assert credential_values(run) == []

    with DevIngest() as unused:
        env = autorun_env(unused, otlp, tmp_path, BEACON_ENABLED="false", **DJANGO_ENV)
        baseline = serve(launch, DJANGO, env, DJANGO_CALLS, unused, otlp)
    assert len(server_spans(run)) == len(DJANGO_CALLS)
    assert signatures(run) == signatures(baseline)


def test_django_runserver_beacon_alone(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    """runserver --noreload with only BEACON_* set: no exporter needed; SIGTERM delivers."""
    env: dict[str, str | None] = {
        key: value for key, value in autorun_env(ingest, otlp, tmp_path).items() if key.startswith("BEACON_")
    }
    env["OTEL_SERVICE_NAME"] = "runserver"  # only names the run; no exporter is configured
    run = serve(launch, RUNSERVER, {**env, **DJANGO_ENV}, DJANGO_CALLS, ingest, otlp, sampled=False)
    assert_events(run, DJANGO_CALLS)
    assert run.spans == []
    assert beacon_lines(run.log) == []


def test_a_pasted_key_with_an_invisible_character_turns_beacon_off_at_start(tmp_path: Path) -> None:
    """Under opentelemetry-instrument, a key with a zero-width space: one error naming
    BEACON_INGEST_KEY, Beacon off, the program runs; the key's text is never printed."""
    import subprocess

    from .conftest import VENV_BIN, clean_environ

    env = clean_environ() | {
        "BEACON_INGEST_KEY": "bk_live_\u200bpasted",
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    result = subprocess.run(
        [str(VENV_BIN / "opentelemetry-instrument"), "python", "-c", "print('app ran')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "app ran", result.stderr
    [line] = [line for line in result.stderr.splitlines() if "BEACON_INGEST_KEY" in line]
    assert "Beacon analytics are off" in line and "U+200B at position 9" in line
    assert "pasted" not in result.stderr
    assert "sending to" not in result.stderr
