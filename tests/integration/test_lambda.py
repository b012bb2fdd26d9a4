"""AWS Lambda: FastAPI through Mangum and Flask through apig-wsgi, under the Lambda instrumentation
that AWS's OpenTelemetry layer runs, in a sandbox driven through the Lambda Runtime API.

Each invocation's event must be at the ingest when the invocation returns (Lambda may freeze the
sandbox then, and kill it later without a signal): checked the moment the runtime posts the
result, without waiting. Then the sandbox is frozen (SIGSTOP) and killed (SIGKILL), and nothing
may be missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.devingest import DevIngest
from tests.support.apps import APPS

from .conftest import VENV_BIN, clean_environ
from .lambda_support import RuntimeApi, http_api_event, rest_api_event

pytestmark = pytest.mark.integration
pytest.importorskip("mangum")
pytest.importorskip("apig_wsgi")
pytest.importorskip("opentelemetry.instrumentation.aws_lambda")

KEY = "lambda-key"
BEARER = "Bearer lambda-token"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]
Event = Callable[..., dict[str, Any]]


@contextlib.contextmanager
def sandbox(handler: str, ingest: DevIngest, tmp_path: Path, **env: str) -> Iterator[RuntimeApi]:
    """A Lambda sandbox running ``handler`` under opentelemetry-instrument; frozen, then killed."""
    api = RuntimeApi()
    full_env = {
        **clean_environ(),
        "AWS_LAMBDA_FUNCTION_NAME": "beacon-test",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_REGION": "eu-west-1",
        "_HANDLER": handler,
        "BEACON_INGEST_KEY": KEY,
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        **env,
    }
    log = (tmp_path / "sandbox.log").open("wb")
    process = subprocess.Popen(
        [str(VENV_BIN / "opentelemetry-instrument"), "python", "lambda_runtime.py"],
        env=full_env,
        cwd=APPS,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield api
        # Lambda freezes the sandbox after the invocation returns and may kill it later without
        # a signal it can handle: nothing may be waiting in the process by then.
        process.send_signal(signal.SIGSTOP)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        api.close()
        log.close()


CASES = [
    pytest.param("lambda_fastapi.handler", "/users/{user_id}", http_api_event, id="fastapi-http-api"),
    pytest.param("lambda_fastapi.handler", "/users/{user_id}", rest_api_event, id="fastapi-rest-api"),
    pytest.param("lambda_flask.handler", "/users/<int:user_id>", http_api_event, id="flask-http-api"),
    pytest.param("lambda_flask.handler", "/users/<int:user_id>", rest_api_event, id="flask-rest-api"),
]


@pytest.mark.parametrize(("handler", "template", "event"), CASES)
def test_each_invocation_delivers_its_event_before_returning(
    handler: str, template: str, event: Event, tmp_path: Path
) -> None:
    """Route templates, consumers (headers and set_consumer) and errors, each event at the ingest
    when its invocation returns; frozen and killed afterwards, nothing is missing or doubled."""
    calls = [
        (event("GET", "/users/3", {"X-API-Key": "key-3"}), 200, template, "key-3", None),
        (event("GET", "/users/4", {"Authorization": BEARER}), 200, template, BEARER_HASH, None),
        (event("GET", "/users/5", {"X-API-Key": "key-5", "X-User": "user-5"}), 200, template, "user-5", None),
        (event("GET", "/boom"), 500, "/boom", None, "RuntimeError: kaboom"),
        (event("GET", "/no/such/thing"), 404, "/no/such/thing", None, None),
    ]
    with DevIngest(ingest_key=KEY) as ingest:
        with sandbox(handler, ingest, tmp_path) as api:
            for n, (lambda_event, status, route, consumer, error) in enumerate(calls, start=1):
                outcome, result = api.invoke(lambda_event)
                assert (outcome, result.get("statusCode")) == ("response", status), result
                arrived = ingest.events()  # no waiting: the invocation has returned
                assert len(arrived) == n, (tmp_path / "sandbox.log").read_text()
                last = arrived[-1]
                assert (last["route"], last["status"], last["consumer"], last["error"]) == (
                    route,
                    status,
                    consumer,
                    error,
                ), last
        assert len(ingest.events()) == len(calls)
        assert ingest.stats()["batches_rejected"] == 0
    log = (tmp_path / "sandbox.log").read_text()
    assert [line for line in log.splitlines() if "beacon-otel" in line and "sending to" not in line] == [], (
        log
    )


def test_ingest_down_each_invocation_leaves_its_event_on_disk_then_a_new_sandbox_sends_it(
    tmp_path: Path,
) -> None:
    """The ingest down: each invocation returns with its event on disk (/tmp on Lambda), not
    waiting out the retries; the sandbox frozen and killed; a new sandbox sends them all once."""
    from beacon_otel.spool.store import destinations

    spool = tmp_path / "spool"
    with DevIngest(ingest_key=KEY) as ingest:
        ingest.stop()
        # The flush timeout is only an upper bound here: without a spool the flush would use it all.
        env = {"OTEL_INSTRUMENTATION_AWS_LAMBDA_FLUSH_TIMEOUT": "10000"}
        with sandbox("lambda_fastapi.handler", ingest, tmp_path, **env) as api:
            for n in range(1, 4):
                outcome, result = api.invoke(http_api_event("GET", f"/users/{n}"))
                assert (outcome, result.get("statusCode")) == ("response", 200)
                on_disk = sum(d.batches for d in destinations(spool))
                assert on_disk == n, (tmp_path / "sandbox.log").read_text()
        ingest.start()
        with sandbox("lambda_fastapi.handler", ingest, tmp_path, **env) as api:
            outcome, _ = api.invoke(http_api_event("GET", "/users/9"))
            assert outcome == "response"
            events = ingest.wait_for_events(4, timeout=60)
    assert sorted(e["path"] for e in events) == ["/users/1", "/users/2", "/users/3", "/users/9"]
    assert all(e["route"] == "/users/{user_id}" for e in events)
