"""The local dev ingest: strict contract validation, storage, summary, faults and CLI."""

from __future__ import annotations

import gzip
import io
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from beacon_otel.cli import main
from beacon_otel.devingest import (
    DevIngest,
    Fault,
    IngestTimeout,
    format_summary,
    validate_event,
)
from beacon_otel.devingest.httpd import discard_chunked
from beacon_otel.devingest.summary import _percentile
from tests.support.events import DELETE, wire_event

AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}


def make_event(**changes: Any) -> dict[str, Any]:
    """A valid event, with some keys changed (or removed with DELETE)."""
    return wire_event(**{"path": "/users/123", "consumer": "alice", **changes})


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running behind it."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    """A running dev ingest with an in-memory database, stopped after the test."""
    with DevIngest() as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A pooled HTTP session (keep-alive, like the real client), closed after the test."""
    with requests.Session() as s:
        yield s


def post(
    session: requests.Session,
    url: str,
    events: object,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> requests.Response:
    """POST a batch as the client does: JSON, bearer key, explicit Content-Length."""
    body = json.dumps({"events": events}).encode()
    return session.post(url, data=body, headers=headers or AUTH, timeout=timeout)


def test_valid_batch_is_accepted_and_stored(ingest: DevIngest, session: requests.Session) -> None:
    """A valid batch gets 202 with the count, and every event is stored exactly as sent."""
    events = [make_event(), make_event(status=500, error="HTTP 500", consumer=None)]
    response = post(session, ingest.url, events)
    assert (response.status_code, response.json()) == (202, {"accepted": 2})
    assert ingest.events() == events
    assert session.get(ingest.base_url + "/v1/events", timeout=10).json() == events
    stats = ingest.stats()
    assert stats["batches_accepted"] == 1 and stats["batches_rejected"] == 0
    assert stats["events_accepted"] == stats["events_stored"] == 2


def test_validation_errors_round_trip(ingest: DevIngest, session: requests.Session) -> None:
    """validation_errors is stored and returned when sent, and absent otherwise."""
    details = [{"field": "body.items.0.price", "message": "Field required", "type": "missing"}]
    events = [make_event(status=422, validation_errors=details), make_event()]
    assert post(session, ingest.url, events).status_code == 202
    assert ingest.events() == events


def test_gzip_body_is_decompressed(ingest: DevIngest, session: requests.Session) -> None:
    """A gzip body with Content-Encoding: gzip is accepted and stored."""
    body = gzip.compress(json.dumps({"events": [make_event()]}).encode())
    headers = {**AUTH, "Content-Encoding": "gzip"}
    response = session.post(ingest.url, data=body, headers=headers, timeout=10)
    assert response.status_code == 202
    assert ingest.events() == [make_event()]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer ", "Bearer    ", "Basic dGVzdDp0ZXN0", "bearer test-key", "test-key"],
)
def test_missing_or_malformed_auth_is_401(
    ingest: DevIngest, session: requests.Session, authorization: str | None
) -> None:
    """Without 'Authorization: Bearer <non-empty key>' the batch is refused with 401."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = post(session, ingest.url, [make_event()], headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert ingest.events() == []
    assert ingest.stats()["batches_rejected"] == 1


def test_configured_key_must_match(session: requests.Session) -> None:
    """With ingest_key set, only that exact key is accepted."""
    with DevIngest(ingest_key="right") as server:
        json_type = {"Content-Type": "application/json"}
        wrong = post(session, server.url, [make_event()], {**json_type, "Authorization": "Bearer x"})
        right = post(session, server.url, [make_event()], {**json_type, "Authorization": "Bearer right"})
        assert (wrong.status_code, right.status_code) == (401, 202)
        assert len(server.events()) == 1


GOOD_BODY = json.dumps({"events": [make_event()]}).encode()


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        pytest.param({"Content-Type": "text/plain"}, GOOD_BODY, 400, id="text/plain"),
        pytest.param({"Content-Type": "application/x-json"}, GOOD_BODY, 400, id="x-json"),
        pytest.param({"Content-Type": "application/json; charset=latin-1"}, GOOD_BODY, 400, id="latin-1"),
        pytest.param({"Content-Encoding": "br"}, GOOD_BODY, 400, id="brotli"),
        pytest.param({"Content-Encoding": "identity"}, GOOD_BODY, 400, id="identity"),
        pytest.param({"Content-Encoding": "gzip"}, GOOD_BODY, 400, id="not-really-gzip"),
        pytest.param({}, b"{", 400, id="truncated-json"),
        pytest.param({}, b'{"events": [\xff]}', 400, id="not-utf8"),
        pytest.param({}, b"\xef\xbb\xbf" + GOOD_BODY, 400, id="utf8-bom"),
        pytest.param({}, b"[]", 400, id="top-level-array"),
        pytest.param({}, b'{"events": []}', 400, id="empty-events"),
        pytest.param({}, b'{"events": {}}', 400, id="events-object"),
        pytest.param({}, b'{"events": [{}], "sdk": "x"}', 400, id="extra-top-level-key"),
        pytest.param({}, b'{"events": [], "events": [{}]}', 400, id="duplicate-key"),
        pytest.param({}, GOOD_BODY.replace(b"12", b"NaN"), 400, id="nan"),
        pytest.param({}, b"[" * 100_000, 400, id="deep-nesting"),
    ],
)
def test_malformed_request_is_refused(
    ingest: DevIngest,
    session: requests.Session,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    """Wrong content type or encoding, or a body that is not the contract's JSON, is refused."""
    response = session.post(ingest.url, data=body, headers={**AUTH, **headers}, timeout=10)
    assert response.status_code == status
    assert "error" in response.json()
    assert ingest.events() == []
    assert ingest.stats()["batches_rejected"] == 1


def test_content_type_parameters_are_allowed(ingest: DevIngest, session: requests.Session) -> None:
    """'application/json; charset=utf-8' is JSON too."""
    headers = {**AUTH, "Content-Type": "application/json; charset=UTF-8"}
    assert post(session, ingest.url, [make_event()], headers=headers).status_code == 202


def test_chunked_body_without_length_is_refused(ingest: DevIngest, session: requests.Session) -> None:
    """A body without Content-Length (chunked) is refused with 400."""
    response = session.post(ingest.url, data=iter([GOOD_BODY]), headers=AUTH, timeout=10)
    assert response.status_code == 400
    assert ingest.events() == []


def test_a_refused_chunked_body_is_read_to_its_end_first() -> None:
    """Before answering 400 the ingest reads the chunked body (extensions and trailers too), so a
    client still sending gets the answer instead of a reset; where the body ends, reading stops."""
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    stream = io.BytesIO(body + b"NEXT")
    discard_chunked(stream, limit=100)
    assert stream.read() == b"NEXT"
    endless = io.BytesIO(b"5\r\nhello\r\n" * 10)
    discard_chunked(endless, limit=12)  # past the limit it stops, the connection closes anyway
    assert endless.tell() == 3 * len(b"5\r\nhello\r\n")


def test_body_over_10_mib_is_413(ingest: DevIngest, session: requests.Session) -> None:
    """A body over 10 MiB, sent as is or inflated from gzip, is refused with 413."""
    huge = json.dumps({"events": [make_event(error="x" * (11 * 1024 * 1024))]}).encode()
    assert session.post(ingest.url, data=huge, headers=AUTH, timeout=30).status_code == 413
    headers = {**AUTH, "Content-Encoding": "gzip"}
    bomb = gzip.compress(huge)
    assert len(bomb) < 100_000
    assert session.post(ingest.url, data=bomb, headers=headers, timeout=30).status_code == 413
    assert ingest.events() == []


INVALID_EVENTS = {
    "extra key": make_event(extra=1),
    "missing consumer key": make_event(consumer=DELETE),
    "missing error key": make_event(error=DELETE),
    "missing ts": make_event(ts=DELETE),
    "naive ts": make_event(ts="2026-06-03T12:00:00.000"),
    "ts with space": make_event(ts="2026-06-03 12:00:00+00:00"),
    "ts date only": make_event(ts="2026-06-03"),
    "ts basic offset": make_event(ts="2026-06-03T12:00:00+0000"),
    "ts month 13": make_event(ts="2026-13-03T12:00:00+00:00"),
    "ts not a time": make_event(ts="yesterday"),
    "ts number": make_event(ts=1780488000),
    "lowercase method": make_event(method="get"),
    "17-char method": make_event(method="A" * 17),
    "empty method": make_event(method=""),
    "method with space": make_event(method="GE T"),
    "method with newline": make_event(method="GET\n"),
    "non-ascii method": make_event(method="GÉT"),
    "method null": make_event(method=None),
    "route without slash": make_event(route="users/{user_id}"),
    "2049-char route": make_event(route="/" + "a" * 2048),
    "empty route": make_event(route=""),
    "route with control char": make_event(route="/users/\x01"),
    "path with query": make_event(path="/users/123?debug=1"),
    "4097-char path": make_event(path="/" + "a" * 4096),
    "path without slash": make_event(path="users/123"),
    "path with DEL": make_event(path="/users/\x7f"),
    "status 99": make_event(status=99),
    "status 600": make_event(status=600),
    "status True": make_event(status=True),
    "status string": make_event(status="200"),
    "status float": make_event(status=200.0),
    "duration -1": make_event(duration_ms=-1),
    "duration 1.5": make_event(duration_ms=1.5),
    "duration True": make_event(duration_ms=True),
    "duration null": make_event(duration_ms=None),
    "duration over int64": make_event(duration_ms=2**63),
    "consumer 257 chars": make_event(consumer="c" * 257),
    "consumer number": make_event(consumer=42),
    "consumer with NUL": make_event(consumer="a\x00b"),
    "error 8193 chars": make_event(error="e" * 8193),
    "error false": make_event(error=False),
    "validation_errors 51 items": make_event(validation_errors=[{"field": "f", "message": "m"}] * 51),
    "validation_errors empty": make_event(validation_errors=[]),
    "validation_errors null": make_event(validation_errors=None),
    "validation_errors extra key": make_event(
        validation_errors=[{"field": "f", "message": "m", "loc": ["body"]}]
    ),
    "validation_errors field 513 chars": make_event(validation_errors=[{"field": "f" * 513, "message": "m"}]),
    "validation_errors message 1025 chars": make_event(
        validation_errors=[{"field": "f", "message": "m" * 1025}]
    ),
    "validation_errors type 257 chars": make_event(
        validation_errors=[{"field": "f", "message": "m", "type": "t" * 257}]
    ),
    "validation_errors missing message": make_event(validation_errors=[{"field": "f"}]),
    "validation_errors item string": make_event(validation_errors=["f: m"]),
    "lone surrogate in consumer": make_event(consumer="bad\ud800"),
    "lone surrogate in error": make_event(error="ValueError: \udcff"),
    "lone surrogate in route": make_event(route="/users/\ud83d"),
    "lone surrogate in validation message": make_event(
        validation_errors=[{"field": "f", "message": "\udc80"}]
    ),
    "event not an object": ["GET", "/users"],
}


@pytest.mark.parametrize("event", INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys())
def test_invalid_event_is_rejected_with_400(
    ingest: DevIngest, session: requests.Session, event: object
) -> None:
    """Each contract rule, broken alone, gets 400 with a problem report and stores nothing."""
    response = post(session, ingest.url, [event])
    assert response.status_code == 400
    problems = response.json()["problems"]
    assert problems and all(p["index"] == 0 for p in problems)
    assert ingest.events() == []
    stats = ingest.stats()
    assert stats["batches_rejected"] == 1
    assert stats["rejections"][0]["problems"] == problems


VALID_EDGE_EVENTS = {
    "Z offset": make_event(ts="2026-06-03T12:00:00Z"),
    "negative offset": make_event(ts="2026-06-03T07:00:00.123456-05:00"),
    "nanoseconds": make_event(ts="2026-06-03T12:00:00.123456789+00:00"),
    "16-char method": make_event(method="A" * 16),
    "custom method": make_event(method="M-SEARCH"),
    "2048-char route": make_event(route="/" + "a" * 2047),
    "4096-char path": make_event(path="/" + "a" * 4095),
    "route of an unmatched 404": make_event(route="/nope/1", path="/nope/1", status=404),
    "status 100": make_event(status=100),
    "status 599": make_event(status=599),
    "duration 0": make_event(duration_ms=0),
    "consumer 256 chars": make_event(consumer="c" * 256),
    "unicode consumer": make_event(consumer="hash_ü😀"),
    "error 8192 chars with newlines": make_event(error="Traceback\n\t" + "e" * 8181),
    "50 validation errors": make_event(
        validation_errors=[{"field": "f" * 512, "message": "m" * 1024, "type": "t" * 256}] * 50
    ),
}


@pytest.mark.parametrize("event", VALID_EDGE_EVENTS.values(), ids=VALID_EDGE_EVENTS.keys())
def test_events_at_the_limits_are_accepted(
    ingest: DevIngest, session: requests.Session, event: dict[str, Any]
) -> None:
    """Values exactly at the contract's limits are valid: the ingest is strict, not stricter."""
    response = post(session, ingest.url, [event])
    assert response.status_code == 202, response.text
    assert ingest.events() == [event]


def test_one_bad_event_rejects_the_whole_batch(ingest: DevIngest, session: requests.Session) -> None:
    """A single invalid event refuses the batch: the valid events beside it are not stored."""
    events = [make_event(), make_event(method="get", extra=True), make_event(), make_event(status=0)]
    response = post(session, ingest.url, events)
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("2 invalid event(s)")
    assert {(p["index"], p["field"]) for p in body["problems"]} == {
        (1, "method"),
        (1, "extra"),
        (3, "status"),
    }
    assert ingest.events() == []
    assert ingest.stats()["events_accepted"] == 0


def test_validate_event_reports_every_problem() -> None:
    """validate_event() lists each broken field, and nothing for a valid event."""
    assert validate_event(make_event()) == []
    problems = validate_event(make_event(method="get", path="x?y", consumer=DELETE), index=7)
    assert [(p["index"], p["field"]) for p in problems] == [
        (7, "consumer"),
        (7, "method"),
        (7, "path"),
    ]


@pytest.mark.parametrize(
    ("values", "p50", "p95"),
    [
        ([], None, None),
        ([5], 5, 5),
        ([1, 2], 1, 2),
        ([3, 1, 2], 2, 3),
        (list(range(1, 21)), 10, 19),
        (list(range(1, 101)), 50, 95),
    ],
)
def test_percentile_is_nearest_rank(values: list[int], p50: int | None, p95: int | None) -> None:
    """p50/p95 are nearest-rank: the smallest value with at least that share at or below it."""
    assert (_percentile(sorted(values), 50), _percentile(sorted(values), 95)) == (p50, p95)


def test_summary_per_route(ingest: DevIngest, session: requests.Session) -> None:
    """Per route: requests, errors (exception or 5xx), 4xx, status mix, p50/p95/p99, top consumers."""
    consumers = ["alice"] * 8 + ["bob"] * 5 + [None] * 4 + ["carol"] * 3
    users = [make_event(duration_ms=d, consumer=c) for d, c in zip(range(1, 21), consumers, strict=True)]
    users[0]["status"] = 500  # a 5xx is an error even without an exception
    users[1]["error"] = "ValueError: boom"  # an exception is an error even with a 2xx
    users[2]["status"] = 404  # a 4xx is not an error, but is counted apart
    orders = [make_event(method="POST", route="/orders", path="/orders", duration_ms=7)]
    assert post(session, ingest.url, users + orders).status_code == 202

    summary = ingest.summary()
    assert summary == session.get(ingest.base_url + "/v1/summary", timeout=10).json()
    assert summary["routes"][0] == {
        "method": "GET",
        "route": "/users/{user_id}",
        "requests": 20,
        "errors": 2,
        "error_rate": 0.1,
        "client_errors": 1,
        "client_error_rate": 0.05,
        "server_errors": 1,
        "server_error_rate": 0.05,
        "statuses": {"200": 18, "404": 1, "500": 1},
        "p50_ms": 10,
        "p95_ms": 19,
        "p99_ms": 20,
        "top_consumers": [
            {"consumer": "alice", "count": 8},
            {"consumer": "bob", "count": 5},
            {"consumer": "-", "count": 4},
        ],
    }
    assert summary["routes"][1]["route"] == "/orders"
    assert (summary["routes"][1]["p50_ms"], summary["routes"][1]["p95_ms"]) == (7, 7)
    assert summary["totals"] == {
        "requests": 21,
        "errors": 2,
        "error_rate": round(2 / 21, 4),
        "client_errors": 1,
        "client_error_rate": round(1 / 21, 4),
        "server_errors": 1,
        "server_error_rate": round(1 / 21, 4),
        "statuses": {"200": 19, "404": 1, "500": 1},
        "p50_ms": 10,  # 11th of 1..7, 7, 8..20
        "p95_ms": 19,  # 20th
        "p99_ms": 20,
        "routes": 2,
    }

    table = format_summary(summary)
    lines = table.splitlines()
    assert lines[0].split() == [
        "METHOD", "ROUTE", "REQS", "ERR%", "4XX", "P50ms", "P95ms", "P99ms", "TOP", "CONSUMER"
    ]  # fmt: skip
    assert re.search(r"GET\s+/users/\{user_id\}\s+20\s+10\.0%\s+1\s+10\s+19\s+20\s+alice \(8\)", table)
    assert re.search(r"TOTAL\s+2 routes\s+21\s+9\.5%", table)
    assert "statuses: 200 x19, 404 x1, 500 x1" in table
    assert max(map(len, lines)) <= 100


def test_summary_shows_latest_errors_and_validation_fields(
    ingest: DevIngest, session: requests.Session
) -> None:
    """Error texts (newest first) and validation errors counted by field are in the summary and its text."""
    invalid = [{"field": "body.price", "message": "Field required", "type": "missing"}]
    events = [
        make_event(
            status=500, error="ZeroDivisionError: division by zero", ts="2026-06-03T12:00:01.000+00:00"
        ),
        make_event(status=502, error=None, ts="2026-06-03T12:00:02.000+00:00"),
        make_event(method="POST", route="/orders", path="/orders", status=422, validation_errors=invalid),
        make_event(method="POST", route="/orders", path="/orders", status=422, validation_errors=invalid),
    ]
    assert post(session, ingest.url, events).status_code == 202
    summary = ingest.summary()
    assert [(e["status"], e["error"]) for e in summary["latest_errors"]] == [
        (502, None),
        (500, "ZeroDivisionError: division by zero"),
    ]
    assert summary["validation_fields"] == [
        {"field": "body.price", "count": 2, "message": "Field required", "route": "/orders", "method": "POST"}
    ]
    text = format_summary(summary)
    assert "12:00:01 GET /users/{user_id} 500  ZeroDivisionError: division by zero" in text
    assert "12:00:02 GET /users/{user_id} 502  HTTP 502" in text
    assert "body.price x2: Field required (POST /orders)" in text


def test_summary_filters_by_consumer_and_status(ingest: DevIngest, session: requests.Session) -> None:
    """?consumer= and ?status= count only matching events; the consumer list stays complete."""
    events = [make_event(consumer="alice"), make_event(consumer="bob", status=404), make_event(consumer=None)]
    assert post(session, ingest.url, events).status_code == 202
    get = lambda query: session.get(f"{ingest.base_url}/v1/summary?{query}", timeout=10)  # noqa: E731
    assert get("consumer=bob").json()["totals"]["requests"] == 1
    assert get("consumer=-").json()["totals"]["requests"] == 1  # "-" is "no consumer"
    only_4xx = get("status=4xx").json()
    assert only_4xx["totals"]["statuses"] == {"404": 1}
    assert {c["consumer"] for c in only_4xx["consumers"]} == {"alice", "bob", "-"}
    assert get("status=4xx&consumer=alice").json()["routes"] == []
    refused = get("status=404")
    assert refused.status_code == 400 and "2xx" in refused.json()["error"]


def test_summary_charts_data(ingest: DevIngest, session: requests.Session) -> None:
    """The latency histogram counts every event in one bucket; traffic steps cover the time span."""
    stamps = [
        "2026-06-03T12:00:00.000+00:00",
        "2026-06-03T12:00:00.5Z",
        "2026-06-03T12:00:03.123456789+00:00",
    ]
    events = [make_event(ts=ts, duration_ms=d) for ts, d in zip(stamps, (3, 30, 9000), strict=True)]
    events.append(make_event(ts="2026-06-03T12:00:03.000+00:00", status=500, error="HTTP 500"))
    assert post(session, ingest.url, events).status_code == 202
    summary = ingest.summary()
    histogram = {b["le_ms"]: b["count"] for b in summary["latency_histogram"]}
    assert (histogram[5], histogram[50], histogram[25], histogram[None]) == (1, 1, 1, 1)
    assert sum(histogram.values()) == 4
    traffic = summary["traffic"]
    assert [(p["requests"], p["errors"]) for p in traffic] == [(2, 0), (0, 0), (0, 0), (2, 1)]
    assert all(p["step_s"] == 1 for p in traffic)


def test_events_offset_and_limit(ingest: DevIngest, session: requests.Session) -> None:
    """GET /v1/events?offset=N skips the first N events; ?limit=N gives the newest N."""
    events = [make_event(duration_ms=i) for i in range(5)]
    assert post(session, ingest.url, events).status_code == 202
    get = lambda query: session.get(f"{ingest.base_url}/v1/events?{query}", timeout=10)  # noqa: E731
    assert get("offset=3").json() == events[3:]
    assert get("limit=2").json() == events[3:]
    assert get("offset=-1").status_code == 400


def test_dashboard_page_is_served_at_the_root(ingest: DevIngest, session: requests.Session) -> None:
    """GET / is the dashboard: HTML that loads nothing from elsewhere (a CSP allows only itself)."""
    page = session.get(ingest.base_url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "<title>Beacon dev ingest</title>" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")


def test_format_summary_without_events() -> None:
    """An empty summary renders as a sentence, not an empty table."""
    assert format_summary({"routes": [], "totals": {}}) == "No events received yet."


def test_format_summary_keeps_rows_on_one_line(ingest: DevIngest, session: requests.Session) -> None:
    """Control characters in free text and very long routes do not break the table."""
    event = make_event(route="/" + "r" * 300, consumer="line\nbreak")
    assert post(session, ingest.url, [event]).status_code == 202
    lines = format_summary(ingest.summary()).splitlines()
    assert len(lines) == 7  # head, rule, route, rule, total, blank, statuses
    assert "line?break (1)" in lines[2]
    assert max(map(len, lines)) <= 100


def test_scripted_503_then_normal(ingest: DevIngest, session: requests.Session) -> None:
    """Each POST consumes one scripted fault and stores nothing; then normal service resumes."""
    ingest.script([Fault(status=503), Fault(status=503)])
    statuses = [post(session, ingest.url, [make_event()]).status_code for _ in range(3)]
    assert statuses == [503, 503, 202]
    assert len(ingest.events()) == 1
    assert ingest.faults == []
    assert [(a["outcome"], a["status"], a["events"]) for a in ingest.arrivals()] == [
        ("fault", 503, 0),
        ("fault", 503, 0),
        ("accepted", 202, 1),
    ]
    assert ingest.stats()["batches_rejected"] == 0  # injected faults are not rejections


def test_fault_sends_its_headers(ingest: DevIngest, session: requests.Session) -> None:
    """A scripted 429 carries its Retry-After header."""
    ingest.script([Fault(status=429, headers={"Retry-After": "2"})])
    response = post(session, ingest.url, [make_event()])
    assert (response.status_code, response.headers["Retry-After"]) == (429, "2")


def test_arrivals_record_times(ingest: DevIngest, session: requests.Session) -> None:
    """Arrivals carry monotonic and wall-clock times in order, so tests can check retry gaps."""
    before_mono, before_wall = time.monotonic(), time.time()
    ingest.script([Fault(status=500)])
    post(session, ingest.url, [make_event()])
    post(session, ingest.url, [make_event()])
    first, second = ingest.arrivals()
    assert before_mono <= first["monotonic"] <= first["finished"] <= second["monotonic"]
    assert before_wall <= first["wall"] <= second["wall"] <= time.time()
    assert [first["seq"], second["seq"]] == [0, 1]


def test_dropped_connection_gets_no_response(ingest: DevIngest, session: requests.Session) -> None:
    """Fault(drop=True) closes the connection without any answer; the next POST is normal."""
    ingest.script([Fault(drop=True)])
    with pytest.raises(requests.ConnectionError):
        post(session, ingest.url, [make_event()])
    assert ingest.events() == []
    assert post(session, ingest.url, [make_event()]).status_code == 202
    assert [a["outcome"] for a in ingest.arrivals()] == ["dropped", "accepted"]


def test_hang_delays_the_answer(ingest: DevIngest, session: requests.Session) -> None:
    """Fault(hang=s) answers after s seconds: normally, or with the scripted status."""
    ingest.script([Fault(hang=0.2), Fault(hang=0.1, status=503)])
    assert post(session, ingest.url, [make_event()]).status_code == 202
    assert post(session, ingest.url, [make_event()]).status_code == 503
    hung, failed = ingest.arrivals()
    assert hung["finished"] - hung["monotonic"] >= 0.2
    assert failed["finished"] - failed["monotonic"] >= 0.1
    assert len(ingest.events()) == 1


def test_hang_times_out_client_and_stop_cuts_it_short(session: requests.Session) -> None:
    """A client timeout fires during a hang, and stop() does not wait for the hang to end."""
    server = DevIngest().start()
    try:
        server.script([Fault(hang=60)])
        with pytest.raises(requests.Timeout):
            post(session, server.url, [make_event()], timeout=0.2)
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 10


def test_faults_and_arrivals_over_http(ingest: DevIngest, session: requests.Session) -> None:
    """Tests driving an ingest in another process script faults and read arrivals over HTTP."""
    faults = [{"status": 429, "headers": {"Retry-After": "1"}}, {"drop": True}]
    response = session.post(ingest.base_url + "/v1/_faults", json=faults, timeout=10)
    assert response.json() == {"scripted": 2}
    pending = session.get(ingest.base_url + "/v1/_faults", timeout=10).json()
    assert [f["status"] for f in pending] == [429, None]
    assert post(session, ingest.url, [make_event()]).status_code == 429
    arrivals = session.get(ingest.base_url + "/v1/_arrivals", timeout=10).json()
    assert [(a["outcome"], a["status"]) for a in arrivals] == [("fault", 429)]
    assert session.post(ingest.base_url + "/v1/_reset", json={}, timeout=10).json() == {"reset": True}
    assert ingest.faults == [] and ingest.arrivals() == []


@pytest.mark.parametrize(
    "bad",
    [{"status": 99}, {"status": "503"}, {"drop": True, "status": 503}, {"hang": -1}, {"x": 1}],
)
def test_invalid_fault_is_refused(ingest: DevIngest, session: requests.Session, bad: dict[str, Any]) -> None:
    """A fault that makes no sense is refused, in Python and over HTTP."""
    with pytest.raises((ValueError, TypeError)):
        Fault.from_dict(bad)
    response = session.post(ingest.base_url + "/v1/_faults", json=[bad], timeout=10)
    assert response.status_code == 400
    assert ingest.faults == []


def test_wait_for_events_wakes_on_insert(ingest: DevIngest, session: requests.Session) -> None:
    """wait_for_events() returns as soon as a batch from another thread is stored."""
    sender = threading.Thread(target=post, args=(session, ingest.url, [make_event()] * 3))
    sender.start()
    try:
        assert len(ingest.wait_for_events(3, timeout=10)) == 3
    finally:
        sender.join()


def test_wait_for_events_timeout_explains(ingest: DevIngest, session: requests.Session) -> None:
    """A timeout is an AssertionError and TimeoutError saying what did arrive and why not."""
    post(session, ingest.url, [make_event(method="get")])
    with pytest.raises(IngestTimeout, match=r"expected at least 1 events .* got 0") as caught:
        ingest.wait_for_events(1, timeout=0.05)
    assert isinstance(caught.value, AssertionError) and isinstance(caught.value, TimeoutError)
    assert "must be upper case" in str(caught.value)


def test_reset_forgets_everything(ingest: DevIngest, session: requests.Session) -> None:
    """reset() clears events, counters, rejections, arrivals and faults."""
    post(session, ingest.url, [make_event()])
    post(session, ingest.url, [make_event(status=1)])
    ingest.script([Fault(status=503)])
    ingest.reset()
    assert ingest.events() == [] and ingest.arrivals() == [] and ingest.faults == []
    stats = ingest.stats()
    assert stats["batches_accepted"] == stats["batches_rejected"] == stats["events_stored"] == 0
    assert stats["rejections"] == []


def test_read_endpoints(ingest: DevIngest, session: requests.Session) -> None:
    """/healthz, /v1/stats answer 200; unknown paths 404."""
    assert session.get(ingest.base_url + "/healthz", timeout=10).status_code == 200
    stats = session.get(ingest.base_url + "/v1/stats", timeout=10).json()
    assert stats == ingest.stats()
    assert session.get(ingest.base_url + "/v2/nope", timeout=10).status_code == 404
    assert session.post(ingest.base_url + "/v2/nope", timeout=10).status_code == 404
    assert ingest.url == ingest.base_url + "/v1/ingest"


def test_stop_ends_idle_keepalive_connections(session: requests.Session) -> None:
    """stop() returns while a client still holds an idle keep-alive connection."""
    server = DevIngest().start()
    try:
        assert post(session, server.url, [make_event()]).status_code == 202
    finally:
        server.stop()  # the session is still open: its pooled connection must not block us
    with pytest.raises(RuntimeError, match="not running"):
        server.events()


def test_stop_answers_the_batch_it_is_storing(
    tmp_path: Path, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch being stored when stop() cuts connections is still answered 202.

    Cutting it off after the store would make the client resend a batch that arrived.
    """
    server = DevIngest(db_path=str(tmp_path / "dev.sqlite3")).start()
    storing, connections_cut = threading.Event(), threading.Event()
    handle_batch, running = server.reception.handle_batch, server._server
    assert running is not None
    close_connections = running.close_connections

    def slow_handle_batch(*args: Any) -> Any:
        storing.set()
        connections_cut.wait(10)  # store only once stop() has dealt with open connections
        return handle_batch(*args)

    def close_and_tell() -> None:
        close_connections()
        connections_cut.set()

    monkeypatch.setattr(server.reception, "handle_batch", slow_handle_batch)
    monkeypatch.setattr(running, "close_connections", close_and_tell)
    answers: queue.Queue[int | Exception] = queue.Queue()

    def send() -> None:
        try:
            answers.put(post(session, server.url, [make_event()]).status_code)
        except requests.RequestException as exc:
            answers.put(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert storing.wait(10)
    server.stop()
    sender.join(10)
    assert answers.get_nowait() == 202
    monkeypatch.undo()
    with server:
        assert server.events() == [make_event()]


def test_file_database_survives_restart(tmp_path: Path, session: requests.Session) -> None:
    """With a file database, events survive stop/start, and a restart keeps the port."""
    server = DevIngest(db_path=str(tmp_path / "dev.sqlite3"))
    with server:
        post(session, server.url, [make_event()])
        url = server.url
    with server:
        assert server.url == url
        assert server.events() == [make_event()]


# --- the command line, as a real subprocess -------------------------------------------------


class CliProcess:
    """A `beacon-otel dev-ingest` subprocess whose stdout lines are read on a thread."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "beacon_otel.cli", "dev-ingest", "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect_line(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        """Wait for the next stdout line matching predicate."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout}s (exit {self.process.poll()})")

    def close(self) -> None:
        """Kill the process if still running and release its pipes and reader thread."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        self.reader.join()


@pytest.fixture
def cli_ingest(tmp_path: Path) -> Iterator[CliProcess]:
    """`beacon-otel dev-ingest --port 0` as a subprocess, killed if a test leaves it running."""
    proc = CliProcess("--db", str(tmp_path / "dev.sqlite3"))
    try:
        yield proc
    finally:
        proc.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `beacon-otel ARGS` to completion in a subprocess."""
    command = [sys.executable, "-m", "beacon_otel.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_cli_dev_ingest_and_summary(cli_ingest: CliProcess, session: requests.Session) -> None:
    """dev-ingest prints its URL, logs batches; summary prints the table; SIGTERM exits 0."""
    line = cli_ingest.expect_line(lambda s: s.startswith("Beacon dev ingest listening on "))
    url = line.rsplit(" ", 1)[1]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/ingest", url) and not url.endswith(":0")

    assert post(session, url, [make_event(), make_event()]).status_code == 202
    cli_ingest.expect_line(lambda s: s == "accepted 2 events")
    result = run_cli("summary", "--url", url)
    assert result.returncode == 0, result.stderr
    assert "/users/{user_id}" in result.stdout
    assert "batches accepted: 1, rejected: 0" in result.stdout

    assert post(session, url, [make_event(method="get")]).status_code == 400
    cli_ingest.expect_line(lambda s: s.startswith("rejected batch (400)") and "method" in s)
    result = run_cli("summary", "--url", url.removesuffix("/v1/ingest"))
    assert result.returncode == 1
    assert "batches accepted: 1, rejected: 1" in result.stdout

    cli_ingest.process.send_signal(signal.SIGTERM)
    assert cli_ingest.process.wait(timeout=30) == 0
    assert cli_ingest.process.stderr is not None
    assert cli_ingest.process.stderr.read() == ""


def test_cli_summary_in_process(
    ingest: DevIngest, session: requests.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary accepts the ingest endpoint as printed and exits 0 when nothing was rejected."""
    post(session, ingest.url, [make_event()])
    assert main(["summary", "--url", ingest.url]) == 0
    out = capsys.readouterr().out
    assert "GET" in out and "batches accepted: 1, rejected: 0" in out


def test_cli_summary_unreachable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """summary exits 2 when no dev ingest answers, and says how to start one on that port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    assert main(["summary", "--url", f"http://127.0.0.1:{port}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"beacon-otel summary: no dev ingest is running at http://127.0.0.1:{port} (connection refused).",
        f"Start it with: beacon-otel dev-ingest --port {port}",
    ]


def test_cli_dev_ingest_port_in_use_exits_1(ingest: DevIngest, capsys: pytest.CaptureFixture[str]) -> None:
    """dev-ingest exits 1 when its port is taken, restoring the signal handlers it set."""
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    assert main(["dev-ingest", "--port", str(ingest.port), "--db", ":memory:"]) == 1
    assert "cannot start" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_failing_log_callback_does_not_cost_the_response(session: requests.Session) -> None:
    """A log callback that raises is logged; the client still gets its 202."""

    def broken(line: str) -> None:
        raise BrokenPipeError(line)

    with DevIngest(log=broken) as server:
        assert post(session, server.url, [make_event()]).status_code == 202
        assert len(server.events()) == 1


# --- Idempotency-Key: each batch stored once --------------------------------------------------


def keyed(key: str) -> dict[str, str]:
    return {**AUTH, "Idempotency-Key": key}


def test_repeated_idempotency_key_is_answered_and_stored_once(
    ingest: DevIngest, session: requests.Session
) -> None:
    """A batch resent with the same Idempotency-Key gets the first 202 again and is not stored twice."""
    events = [make_event(), make_event(status=500, error="HTTP 500")]
    first = post(session, ingest.url, events, keyed("3f6c0d2a9b8e4c71a5d0e9f24b7c1a68"))
    again = post(session, ingest.url, events, keyed("3f6c0d2a9b8e4c71a5d0e9f24b7c1a68"))
    assert (first.status_code, first.json()) == (again.status_code, again.json()) == (202, {"accepted": 2})
    assert ingest.events() == events
    stats = ingest.stats()
    assert (stats["batches_accepted"], stats["events_accepted"]) == (1, 2)
    assert (stats["batches_repeated"], stats["events_repeated"]) == (1, 2)
    assert session.get(ingest.base_url + "/v1/stats", timeout=10).json()["batches_repeated"] == 1


def test_repeat_is_recognised_whatever_the_encoding(ingest: DevIngest, session: requests.Session) -> None:
    """The same events resent gzip-compressed with the same key are a repeat, not a key reused."""
    assert post(session, ingest.url, [make_event()], keyed("k1")).status_code == 202
    body = gzip.compress(json.dumps({"events": [make_event()]}, indent=1).encode())
    gzipped = {**keyed("k1"), "Content-Encoding": "gzip"}
    resent = session.post(ingest.url, data=body, headers=gzipped, timeout=10)
    assert resent.status_code == 202
    assert len(ingest.events()) == 1 and ingest.stats()["batches_repeated"] == 1


def test_batches_without_a_key_or_with_different_keys_are_all_stored(
    ingest: DevIngest, session: requests.Session
) -> None:
    """Only the key makes a repeat: equal events without a key, or under two keys, are stored each time."""
    for headers in (AUTH, AUTH, keyed("a"), keyed("b")):
        assert post(session, ingest.url, [make_event()], headers).status_code == 202
    assert len(ingest.events()) == 4
    assert ingest.stats()["batches_repeated"] == 0


def test_key_reused_for_other_events_is_refused(ingest: DevIngest, session: requests.Session) -> None:
    """A key sent again with different events is a client bug: 422, the second batch not stored."""
    assert post(session, ingest.url, [make_event()], keyed("k")).status_code == 202
    reused = post(session, ingest.url, [make_event(status=404)], keyed("k"))
    assert reused.status_code == 422 and "used before" in reused.json()["error"]
    assert ingest.events() == [make_event()]
    assert ingest.stats()["batches_rejected"] == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
def test_malformed_idempotency_key_is_400(ingest: DevIngest, session: requests.Session, key: str) -> None:
    """An Idempotency-Key that is not 1..255 visible ASCII characters refuses the batch."""
    body = json.dumps({"events": [make_event()]}).encode()
    headers = {**AUTH, "Idempotency-Key": key.encode("utf-8").decode("latin-1")}
    response = session.post(ingest.url, data=body, headers=headers, timeout=10)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]
    assert ingest.events() == []


def test_idempotency_keys_survive_a_restart_with_a_file_database(
    tmp_path: Path, session: requests.Session
) -> None:
    """With --db on a file, a batch replayed after a restart (a spool replay) is still a repeat."""
    server = DevIngest(db_path=str(tmp_path / "dev.sqlite3"))
    with server:
        assert post(session, server.url, [make_event()], keyed("spooled-1")).status_code == 202
    with server:
        assert post(session, server.url, [make_event()], keyed("spooled-1")).status_code == 202
        assert len(server.events()) == 1 and server.stats()["batches_repeated"] == 1


def test_reset_forgets_idempotency_keys(ingest: DevIngest, session: requests.Session) -> None:
    """After POST /v1/_reset a key is new again, so tests that reset start from nothing."""
    post(session, ingest.url, [make_event()], keyed("k"))
    assert session.post(ingest.base_url + "/v1/_reset", json={}, timeout=10).status_code == 200
    post(session, ingest.url, [make_event()], keyed("k"))
    assert len(ingest.events()) == 1 and ingest.stats()["batches_accepted"] == 1


def test_summary_views_consumers_error_groups_and_a_routes_drill_down(
    ingest: DevIngest, session: requests.Session
) -> None:
    """Per consumer: requests, error rate, last seen, top routes; the same error text on a route is
    one group with its count and first and last seen; ?route= gives that route's last requests
    and errors, newest first; 4xx and 5xx rates are apart."""
    crash = "RuntimeError: renderer crashed"
    events = [
        make_event(ts="2026-06-03T12:00:01.000+00:00", consumer="acme"),
        make_event(ts="2026-06-03T12:00:02.000+00:00", consumer="acme", status=500, error=crash),
        make_event(ts="2026-06-03T12:00:09.000+00:00", consumer=None, status=500, error=crash),
        make_event(ts="2026-06-03T12:00:05.000+00:00", consumer="hash_0123456789ab", status=503),
        make_event(ts="2026-06-03T12:00:06.000+00:00", route="/orders", path="/orders", status=404),
    ]
    assert post(session, ingest.url, events).status_code == 202
    summary = session.get(
        ingest.base_url + "/v1/summary", params={"route": "GET /users/{user_id}"}, timeout=10
    ).json()

    people = {c["consumer"]: c for c in summary["consumer_figures"]}
    assert people["acme"] == {
        "consumer": "acme",
        "requests": 2,
        "errors": 1,
        "error_rate": 0.5,
        "last_seen": "2026-06-03T12:00:02.000+00:00",
        "top_routes": [{"route": "GET /users/{user_id}", "count": 2}],
    }
    assert people["-"]["requests"] == 1 and people["alice"]["top_routes"][0]["route"] == "GET /orders"

    assert summary["error_groups"] == [
        {
            "method": "GET",
            "route": "/users/{user_id}",
            "error": crash,
            "count": 2,
            "first_seen": "2026-06-03T12:00:02.000+00:00",
            "last_seen": "2026-06-03T12:00:09.000+00:00",
            "status": 500,
        },
        {
            "method": "GET",
            "route": "/users/{user_id}",
            "error": "HTTP 503",
            "count": 1,
            "first_seen": "2026-06-03T12:00:05.000+00:00",
            "last_seen": "2026-06-03T12:00:05.000+00:00",
            "status": 503,
        },
    ]

    detail = summary["route_detail"]
    assert (detail["method"], detail["route"]) == ("GET", "/users/{user_id}")
    assert [e["ts"][17:19] for e in detail["recent"]] == ["05", "09", "02", "01"]  # as stored, newest first
    assert [e["status"] for e in detail["errors"]] == [503, 500, 500]
    orders = next(r for r in summary["routes"] if r["route"] == "/orders")
    users = next(r for r in summary["routes"] if r["route"] == "/users/{user_id}")
    assert (orders["client_error_rate"], orders["server_error_rate"]) == (1.0, 0.0)
    assert (users["client_error_rate"], users["server_error_rate"]) == (0.0, 0.75)
    assert session.get(ingest.base_url + "/v1/summary", timeout=10).json()["route_detail"] is None


def test_the_traffic_chart_follows_the_time_range(ingest: DevIngest, session: requests.Session) -> None:
    """?range=5m and 1h chart only the requests since then, all every one; other ranges get 400."""
    now = time.time()

    def at(seconds_ago: float) -> str:
        return datetime.fromtimestamp(now - seconds_ago, timezone.utc).isoformat(timespec="milliseconds")

    events = [make_event(ts=at(ago)) for ago in (7200, 1800, 1700, 60, 30, 30)]
    assert post(session, ingest.url, events).status_code == 202

    def charted(chosen: str) -> int:
        answer = session.get(ingest.base_url + "/v1/summary", params={"range": chosen}, timeout=10)
        assert answer.json()["range"] == chosen
        return sum(point["requests"] for point in answer.json()["traffic"])

    assert (charted("5m"), charted("1h"), charted("all")) == (3, 5, 6)
    answer = session.get(ingest.base_url + "/v1/summary", params={"range": "2d"}, timeout=10)
    assert answer.status_code == 400 and "range must be one of 5m, 1h, all" in answer.json()["error"]
