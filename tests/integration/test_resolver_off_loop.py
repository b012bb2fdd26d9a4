"""A slow consumer resolver under ASGI never holds up other requests, and is bounded in time.

uvicorn serves the FastAPI app under opentelemetry-instrument with ``BEACON_CONSUMER_RESOLVER``
set to a resolver (``tests/apps/blocking_resolver.py``) that, for ``/users/1``, blocks until the
test releases it. Three other requests are served while it blocks: on the event loop they could
not be (each would wait for the resolver), so the test would fail on its requests' timeout.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from tests.support.waiting import wait_until

from .conftest import Launch

pytestmark = pytest.mark.integration

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "fastapi_app:app"]


def env_for(ingest: DevIngest, tmp_path: Path, resolver: str, timeout: str) -> dict[str, str]:
    return {
        "BEACON_INGEST_KEY": "bk_resolver",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_FLUSH_INTERVAL": "0.2",
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        "BEACON_CONSUMER_RESOLVER": f"blocking_resolver:{resolver}",
        "BEACON_CONSUMER_RESOLVER_TIMEOUT": timeout,
        "TEST_RESOLVER_DIR": str(tmp_path),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }


@pytest.mark.parametrize("resolver", ["resolve", "resolve_async"], ids=["sync", "async"])
def test_other_requests_are_served_while_a_resolver_blocks(
    resolver: str, launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """While /users/1's resolver blocks, /users/2..4 are answered and their events delivered;
    released, /users/1 arrives with the resolver's consumer."""
    server = launch(UVICORN, env_for(ingest, tmp_path, resolver, "60"))
    first = threading.Thread(target=server.request, args=("GET", "/users/1"))
    first.start()
    wait_until(lambda: (tmp_path / "started").exists(), 30, "the resolver of /users/1 started")
    others = [server.request("GET", f"/users/{n}")[0] for n in (2, 3, 4)]
    assert others == [200, 200, 200]
    events = ingest.wait_for_events(3, timeout=30)
    assert {e["path"]: e["consumer"] for e in events} == {f"/users/{n}": "fast-consumer" for n in (2, 3, 4)}
    (tmp_path / "release").touch()
    first.join(30)
    events = ingest.wait_for_events(4, timeout=30)
    assert {e["path"]: e["consumer"] for e in events}["/users/1"] == "slow-consumer"


def test_a_resolver_past_its_time_limit_gives_no_consumer(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """BEACON_CONSUMER_RESOLVER_TIMEOUT=0.2 and a resolver that never answers in time: the event
    arrives all the same, with no consumer."""
    server = launch(UVICORN, env_for(ingest, tmp_path, "resolve", "0.2"))
    assert server.request("GET", "/users/1")[0] == 200
    [event] = ingest.wait_for_events(1, timeout=30)
    assert (event["path"], event["consumer"]) == ("/users/1", None)
    (tmp_path / "release").touch()  # lets the resolver's thread end
