"""What one request may cost the dev ingest: body after decompression, JSON values, events per
batch, problems looked for, and connections served at once."""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests

from beacon_otel.devingest import MAX_PROBLEMS, DevIngest
from beacon_otel.devingest.httpd import MAX_HANDLERS
from beacon_otel.devingest.validation import MAX_EVENTS, MAX_JSON_VALUES
from tests.support.events import wire_event
from tests.support.waiting import wait_until

AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
EVENT = wire_event()


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    with DevIngest() as server:
        yield server


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set so far (Linux: VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
    assert match is not None
    return int(match.group(1))


def test_a_10_kb_gzip_bomb_is_refused_within_100_mb() -> None:
    """3.4 million empty events in 10 KB of gzip (10.2 MB inflated, under the body limit) get 413,
    and the dev ingest process never holds 100 MB."""
    bomb = gzip.compress(b'{"events":[' + b"{}," * 3_399_999 + b"{}]}", 9)
    assert len(bomb) < 10_240
    command = [sys.executable, "-m", "beacon_otel.cli", "dev-ingest", "--port", "0", "--db", ":memory:"]
    process = subprocess.Popen([*command, "--quiet"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().rsplit(" ", 1)[1].strip()
        headers = {**AUTH, "Content-Encoding": "gzip"}
        response = requests.post(url, data=bomb, headers=headers, timeout=120)
        assert response.status_code == 413
        assert "split the batch" in response.json()["error"]
        assert peak_rss_kib(process.pid) < 100 * 1024
        # Still answering, and nothing was stored.
        assert (
            requests.get(url.removesuffix("/v1/ingest") + "/v1/stats", timeout=10).json()["events_stored"]
            == 0
        )
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize(
    "values",
    [b"[]", b'"a"', b"1.5", b"null", b'{"a":[]}'],
    ids=["arrays", "strings", "numbers", "nulls", "objects"],
)
def test_too_many_json_values_are_refused_before_parsing(ingest: DevIngest, values: bytes) -> None:
    """Whatever the values are made of, a body that would build more than MAX_JSON_VALUES gets 413."""
    body = b'{"events":[' + b",".join([values] * (MAX_JSON_VALUES + 1)) + b"]}"
    response = requests.post(ingest.url, data=body, headers=AUTH, timeout=60)
    assert response.status_code == 413
    assert f"over {MAX_JSON_VALUES}" in response.json()["error"]


def test_more_events_than_a_batch_may_hold_are_refused(ingest: DevIngest) -> None:
    """A batch of more than MAX_EVENTS events gets 413 (the client splits it and sends the halves)."""
    body = json.dumps({"events": [EVENT] * (MAX_EVENTS + 1)})
    response = requests.post(ingest.url, data=body, headers=AUTH, timeout=60)
    assert response.status_code == 413
    assert (
        response.json()["error"]
        == f"{MAX_EVENTS + 1} events in one batch, over {MAX_EVENTS}: split the batch"
    )
    body = json.dumps({"events": [EVENT] * MAX_EVENTS})
    assert requests.post(ingest.url, data=body, headers=AUTH, timeout=60).json() == {"accepted": MAX_EVENTS}


def test_validation_stops_at_the_first_100_problems(ingest: DevIngest) -> None:
    """10,000 empty events: checking stops once 100 problems are found, and the answer says how far."""
    body = json.dumps({"events": [{}] * MAX_EVENTS})
    answer = requests.post(ingest.url, data=body, headers=AUTH, timeout=60).json()
    assert len(answer["problems"]) == MAX_PROBLEMS
    # Eight fields missing from each: 12 events give 96 problems, the 13th the last four.
    assert (
        answer["error"] == f"13 invalid event(s) in the first 13 of {MAX_EVENTS}: the whole batch is rejected"
    )
    assert answer["problems"][-1]["index"] == 12


def test_one_event_with_many_unknown_keys_yields_100_short_problems(ingest: DevIngest) -> None:
    """One event's problems stop at 100 too, and a sender's long key name is clipped in them."""
    event = {**EVENT, **{f"{'k' * 5_000}{i}": 0 for i in range(1_000)}}  # 5 MB of key names
    answer = requests.post(ingest.url, data=json.dumps({"events": [event]}), headers=AUTH, timeout=60).json()
    assert len(answer["problems"]) == MAX_PROBLEMS
    assert {len(p["field"]) for p in answer["problems"]} == {128}
    assert len(json.dumps(ingest.stats()["rejections"])) < 30_000


def test_connections_beyond_the_bound_get_503_until_one_closes(ingest: DevIngest) -> None:
    """MAX_HANDLERS connections are served at once; one more gets 503 with Retry-After, not a thread."""
    with ExitStack() as held:
        for _ in range(MAX_HANDLERS):
            held.enter_context(socket.create_connection(("127.0.0.1", ingest.port), timeout=10))
        with socket.create_connection(("127.0.0.1", ingest.port), timeout=10) as extra:
            answer = extra.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nRetry-After: 1\r\n" in answer
    # Once they close, their threads end and requests are served again.
    wait_until(
        lambda: requests.get(ingest.base_url + "/healthz", timeout=10).status_code == 200,
        what="a request served once the held connections closed",
    )
