"""A host name with several addresses: each one that passed the endpoint guard is tried, in order.

Debian's and Ubuntu's stock hosts file gives ``localhost`` as ``::1`` first, while the dev ingest
listens on 127.0.0.1 only. Each test runs its client in a private mount namespace
(``unshare -m``) where such a hosts file is bind-mounted over ``/etc/hosts``; the real resolver
then answers ``::1``, ``127.0.0.1`` and nothing listens on ``::1``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest

from .conftest import clean_environ

pytestmark = pytest.mark.integration

KEY = "bk_every_address"
EVENTS = 10
DELIVER = f"""
import json, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from beacon_otel import BeaconConfig, BeaconSpanProcessor

processor = BeaconSpanProcessor(BeaconConfig(
    ingest_key={KEY!r}, ingest_url=sys.argv[1], storage_path=sys.argv[2], flush_interval=60
))
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("addresses")
for n in range({EVENTS}):
    attributes = {{"http.method": "GET", "http.target": f"/address/{{n}}", "http.status_code": 200}}
    tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()
processor.force_flush(30_000)
print(json.dumps(processor.stats.snapshot()))
"""


@pytest.fixture
def ipv6_first_hosts(tmp_path: Path) -> Iterator[list[str]]:
    """The command prefix that runs a program with ``localhost`` resolving to ::1, then 127.0.0.1."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 localhost\n127.0.0.1 localhost\n")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && exec "$@"', "sh", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount a hosts file in a mount namespace: {probe.stderr.decode()}")
    yield ["unshare", "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && exec "$@"', "sh"]


def run(prefix: list[str], argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = clean_environ() | {"XDG_STATE_HOME": env.pop("XDG_STATE_HOME", "/nonexistent")} | env
    return subprocess.run(
        [*prefix, *argv], env=environ, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_resolver_answers_ipv6_first(ipv6_first_hosts: list[str]) -> None:
    """The namespace does what the other tests rely on: ``localhost`` is ::1, then 127.0.0.1."""
    code = (
        "import socket; print([i[4][0] for i in socket.getaddrinfo('localhost', 1, type=socket.SOCK_STREAM)])"
    )
    result = run(ipv6_first_hosts, [sys.executable, "-c", code])
    assert result.stdout.strip() == "['::1', '127.0.0.1']", result.stderr


def test_delivery_reaches_the_second_address(ipv6_first_hosts: list[str], tmp_path: Path) -> None:
    """``http://localhost:PORT`` with the ingest on 127.0.0.1 only: every event arrives, none retried."""
    with DevIngest(host="127.0.0.1", ingest_key=KEY) as ingest:
        url = f"http://localhost:{ingest.port}"
        result = run(ipv6_first_hosts, [sys.executable, "-c", DELIVER, url, str(tmp_path / "spool")])
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        events = ingest.wait_for_events(EVENTS)
    assert sorted(e["path"] for e in events) == sorted(f"/address/{n}" for n in range(EVENTS))
    assert (stats["sent"], stats["retried"], stats["spooled"], stats["dropped_total"]) == (EVENTS, 0, 0, 0)


def test_doctor_reports_each_address(ipv6_first_hosts: list[str], tmp_path: Path) -> None:
    """The doctor names each address with what a connection to it does, then the ingest answers."""
    with DevIngest(host="127.0.0.1", ingest_key=KEY) as ingest:
        result = run(
            ipv6_first_hosts,
            [sys.executable, "-m", "beacon_otel.cli", "doctor"],
            BEACON_INGEST_KEY=KEY,
            BEACON_INGEST_URL=f"http://localhost:{ingest.port}",
            XDG_STATE_HOME=str(tmp_path / "state"),
        )
        port = ingest.port
    lines = result.stdout.splitlines()
    refused = (
        f"localhost resolves to ::1: allowed; port {port}: connection refused; the next address is tried"
    )
    accepted = f"localhost resolves to 127.0.0.1: allowed; port {port} accepts connections"
    assert [line.split(None, 1)[1] for line in lines if "localhost resolves to" in line] == [
        refused,
        accepted,
    ]
    assert any("answered 400 to an empty batch" in line and "key is accepted" in line for line in lines), (
        result.stdout
    )
    assert result.returncode == 0, result.stdout
