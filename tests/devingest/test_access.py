"""Who may use the dev ingest over HTTP: its own Host and Origin, JSON test calls, the key beyond loopback."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from beacon_otel.devingest import DevIngest, Fault
from beacon_otel.devingest.access import Access, split_host
from tests.support.events import wire_event

AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
JSON = {"Content-Type": "application/json"}
EVENT = wire_event(consumer="sk_live_raw_key")


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    """A running dev ingest with one stored event."""
    with DevIngest() as server:
        body = json.dumps({"events": [EVENT]})
        assert requests.post(server.url, data=body, headers=AUTH, timeout=10).status_code == 202
        yield server


def host_of(ingest: DevIngest) -> str:
    return f"127.0.0.1:{ingest.port}"


@pytest.mark.parametrize(
    "host",
    [
        "rebind.attacker.example:{port}",
        "127.0.0.1.nip.io:{port}",
        "127.0.0.1.nip.io",
        "[::1]:{port}",  # loopback too, but not the bound address
        "localhost:",
        ":{port}",
    ],
)
def test_a_host_that_does_not_name_the_bound_address_is_refused(ingest: DevIngest, host: str) -> None:
    """A DNS-rebinding page's requests name the attacker's host: no read answers them, no POST acts."""
    host = host.format(port=ingest.port)
    for path in ("/v1/events", "/v1/summary", "/v1/stats", "/v1/_arrivals", "/v1/_faults", "/"):
        response = requests.get(ingest.base_url + path, headers={"Host": host}, timeout=10)
        assert response.status_code == 421, (path, response.text)
        assert "sk_live_raw_key" not in response.text
    reset = requests.post(ingest.base_url + "/v1/_reset", headers={**JSON, "Host": host}, json={}, timeout=10)
    assert reset.status_code == 421
    assert ingest.stats()["events_stored"] == 1


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "127.0.0.1:9000", "localhost"]
)
def test_the_bound_address_and_localhost_are_answered(ingest: DevIngest, host: str) -> None:
    """Bound to 127.0.0.1, the dev ingest answers its address and localhost, on any port (a port
    forward or a container's published port names its own)."""
    response = requests.get(
        ingest.base_url + "/v1/events", headers={"Host": host.format(port=ingest.port)}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == [EVENT]


@pytest.mark.parametrize(
    ("bound", "name", "answered"),
    [
        ("0.0.0.0", "192.168.1.20", True),  # any address of the machine: an IP literal cannot be rebound
        ("0.0.0.0", "localhost", True),
        ("0.0.0.0", "attacker.example", False),
        ("::", "::1", True),
        ("localhost", "127.0.0.1", True),
        ("localhost", "localhost", True),
        ("localhost", "evil.localhost.example", False),
        ("192.168.1.20", "192.168.1.20", True),
        ("192.168.1.20", "localhost", False),
        ("::1", "::1", True),
        ("::1", "localhost", True),
    ],
)
def test_the_names_each_binding_answers(bound: str, name: str, answered: bool) -> None:
    """The Host names a binding answers: its own address (localhost for loopback), any IP for a wildcard."""
    assert Access(bound, "k").names_us(name) is answered


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:8390", ("127.0.0.1", 8390)),
        ("[::1]:8390", ("::1", 8390)),
        ("[::1]", ("::1", 80)),
        ("Example.COM", ("example.com", 80)),
        ("[::1", None),
        ("[::1]x", None),
        ("host:port", None),
    ],
)
def test_host_headers_are_parsed(value: str, parsed: tuple[str, int] | None) -> None:
    """A Host header's name and port: brackets for IPv6, port 80 when absent, junk refused."""
    assert split_host(value) == parsed


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "http://attacker.example"}, "another site"),
        ({"Origin": "http://127.0.0.1:1"}, "another port of this machine"),
        ({"Origin": "null"}, "a sandboxed page"),
        ({"Sec-Fetch-Site": "cross-site"}, "cross-site, Origin stripped"),
        ({"Sec-Fetch-Site": "same-site"}, "another port of the same site"),
    ],
)
def test_a_post_from_another_origin_changes_nothing(
    ingest: DevIngest, headers: dict[str, str], reason: str
) -> None:
    """_faults, _reset and ingest POSTs from a page of another origin are refused before they act."""
    base = ingest.base_url
    faults = requests.post(base + "/v1/_faults", json=[{"status": 401}], headers=headers, timeout=10)
    reset = requests.post(base + "/v1/_reset", json={}, headers=headers, timeout=10)
    batch = json.dumps({"events": [EVENT]})
    ingested = requests.post(ingest.url, data=batch, headers={**AUTH, **headers}, timeout=10)
    assert (faults.status_code, reset.status_code, ingested.status_code) == (403, 403, 403), reason
    assert ingest.faults == []
    assert ingest.stats()["events_stored"] == 1
    assert len(ingest.arrivals()) == 1  # the fixture's batch only


def test_the_dev_ingests_own_origin_may_post(ingest: DevIngest) -> None:
    """A POST whose Origin is the dev ingest's own (its dashboard) is answered as any other."""
    headers = {"Origin": f"http://{host_of(ingest)}", "Sec-Fetch-Site": "same-origin"}
    response = requests.post(
        ingest.base_url + "/v1/_faults", json=[{"status": 503}], headers=headers, timeout=10
    )
    assert response.json() == {"scripted": 1}
    assert ingest.faults == [Fault(status=503)]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_test_endpoints_take_json_only(ingest: DevIngest, content_type: str | None) -> None:
    """_faults and _reset refuse what a cross-site form or no-cors fetch can send: 415, nothing done."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps([{"status": 401}])
    faults = requests.post(ingest.base_url + "/v1/_faults", data=body, headers=headers, timeout=10)
    reset = requests.post(ingest.base_url + "/v1/_reset", data=b"{}", headers=headers, timeout=10)
    assert (faults.status_code, reset.status_code) == (415, 415)
    assert ingest.faults == []
    assert ingest.stats()["events_stored"] == 1


def test_a_text_plain_ingest_post_does_not_consume_a_fault(ingest: DevIngest) -> None:
    """A scripted fault waits for a JSON batch: a text/plain POST is refused by the contract and leaves it."""
    ingest.script([Fault(status=503)])
    body = json.dumps({"events": [EVENT]})
    plain = requests.post(ingest.url, data=body, headers={**AUTH, "Content-Type": "text/plain"}, timeout=10)
    assert plain.status_code == 400
    assert ingest.faults == [Fault(status=503)]
    assert requests.post(ingest.url, data=body, headers=AUTH, timeout=10).status_code == 503


def test_the_client_and_the_test_helpers_still_post() -> None:
    """What the beacon-otel client sends (requests, gzip JSON, no Origin) and JSON test calls are answered."""
    with DevIngest() as ingest:
        body = gzip.compress(json.dumps({"events": [EVENT]}).encode())
        headers = {**AUTH, "Content-Encoding": "gzip"}
        assert requests.post(ingest.url, data=body, headers=headers, timeout=10).status_code == 202
        assert requests.post(ingest.base_url + "/v1/_faults", json=[], timeout=10).json() == {"scripted": 0}
        assert requests.post(ingest.base_url + "/v1/_reset", json={}, timeout=10).json() == {"reset": True}
        assert ingest.stats()["events_stored"] == 0


def test_beyond_loopback_a_key_is_required() -> None:
    """Listening beyond loopback without a key is refused at once, naming --key."""
    with pytest.raises(ValueError, match=r"--key"):
        DevIngest(host="0.0.0.0")


def test_beyond_loopback_reads_and_test_calls_need_the_key() -> None:
    """Bound beyond loopback, every read of stored values, _faults and _reset need the ingest key."""
    with DevIngest(host="0.0.0.0", ingest_key="test-key") as ingest:
        base = f"http://127.0.0.1:{ingest.port}"
        assert requests.post(
            base + "/v1/ingest", data=json.dumps({"events": [EVENT]}), headers=AUTH, timeout=10
        ).ok
        wrong = {"Authorization": "Bearer wrong"}
        for path in ("/v1/events", "/v1/summary", "/v1/stats", "/v1/_arrivals", "/v1/_faults"):
            for headers in ({}, wrong):
                response = requests.get(base + path, headers=headers, timeout=10)
                assert response.status_code == 401, path
                assert "sk_live_raw_key" not in response.text
            assert requests.get(base + path, headers=AUTH, timeout=10).status_code == 200
        for path, body in (("/v1/_faults", [{"status": 401}]), ("/v1/_reset", {})):
            assert requests.post(base + path, json=body, headers=wrong, timeout=10).status_code == 401
        assert ingest.faults == [] and ingest.stats()["events_stored"] == 1
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        assert requests.get(base + "/", timeout=10).status_code == 200  # the page holds no values
        assert requests.post(base + "/v1/_reset", json={}, headers=AUTH, timeout=10).json() == {"reset": True}


def test_on_loopback_reads_need_no_key() -> None:
    """On loopback the dashboard and tools read without a key, even when --key guards ingest."""
    with DevIngest(ingest_key="test-key") as ingest:
        assert requests.get(ingest.base_url + "/v1/events", timeout=10).status_code == 200


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "beacon_otel.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_cli_refuses_to_listen_beyond_loopback_without_a_key() -> None:
    """`dev-ingest --host 0.0.0.0` without --key exits 1 with a message naming --key."""
    result = run_cli("dev-ingest", "--host", "0.0.0.0", "--port", "0", "--db", ":memory:")
    assert result.returncode == 1
    assert "--key" in result.stderr and "0.0.0.0" in result.stderr


def test_cli_warns_when_listening_beyond_loopback() -> None:
    """With --key beyond loopback, dev-ingest says on stderr who can reach it and what needs the key."""
    command = [sys.executable, "-m", "beacon_otel.cli", "dev-ingest", "--host", "0.0.0.0", "--port", "0"]
    command += ["--db", ":memory:", "--key", "test-key"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        # Printed once it serves, just before the warning.
        listening, dashboard = process.stdout.readline(), process.stdout.readline()
    finally:
        process.terminate()  # ends it cleanly: SIGTERM only sets the flag it polls
        _, err = process.communicate(timeout=30)
    assert listening.startswith("Beacon dev ingest listening on http://0.0.0.0:")
    assert "warning: listening on 0.0.0.0, beyond loopback" in err
    assert "needs the key (--key)" in err
    assert dashboard.rstrip().endswith("/#key=<ingest key>")
    assert "test-key" not in dashboard + err


def test_the_database_file_is_the_owners_only(tmp_path: Path) -> None:
    """The SQLite file holds consumers as sent: created 0600, and an older 0644 one narrowed."""
    fresh, older = tmp_path / "fresh.sqlite3", tmp_path / "older.sqlite3"
    older.touch()
    os.chmod(older, 0o644)
    for path in (fresh, older):
        with DevIngest(db_path=str(path)) as ingest:
            requests.post(ingest.url, data=json.dumps({"events": [EVENT]}), headers=AUTH, timeout=10)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
