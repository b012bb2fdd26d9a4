"""The contract's field rules: sanitising, truncation, serialising."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from beacon_otel.contract.batch import Batch
from beacon_otel.contract.event import (
    MAX_CONSUMER,
    MAX_VALIDATION_ERRORS,
    RequestEvent,
    clean_method,
    clean_text,
    clean_url_text,
    clean_validation_errors,
    encode_batch,
    encode_events,
    event_json,
    format_ts,
)


def test_ts_is_iso8601_with_an_explicit_offset() -> None:
    """ts is UTC with +00:00 and milliseconds, parseable and timezone-aware."""
    ts = format_ts(1_780_488_000_123_456_789)
    assert ts == "2026-06-03T12:00:00.123+00:00"
    assert datetime.fromisoformat(ts).tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GET", "GET"),
        ("get", "GET"),
        ("PROPFIND", "PROPFIND"),
        ("M-SEARCH", "M-SEARCH"),
        ("VERYLONGCUSTOMMETHODNAME", "VERYLONGCUSTOMME"),
        ("GE T\n", "GET"),
        ("\u00e9t\u00e9", "T"),
        ("", "OTHER"),
        (b"post", "POST"),
    ],
)
def test_method_is_an_upper_case_token_of_at_most_16(raw: object, expected: str) -> None:
    """Methods are upper-cased, stripped of non-token characters, truncated to 16."""
    assert clean_method(raw) == expected


def test_text_replaces_invalid_utf8_and_lone_surrogates() -> None:
    """Bad bytes and lone surrogates become U+FFFD: the result always encodes as UTF-8."""
    assert clean_text(b"caf\xc3\xa9 \xff", 100) == "caf\u00e9 \ufffd"
    cleaned = clean_text("a\ud800b\udcffc", 100)
    cleaned.encode("utf-8")
    assert cleaned.startswith("a") and cleaned.endswith("c") and "\ufffd" in cleaned


def test_text_replaces_nul_and_truncates_by_characters() -> None:
    """NUL is replaced; limits count characters, not bytes."""
    assert clean_text("a\x00b", 10) == "a\ufffdb"
    assert clean_text("\u00e9" * 300, MAX_CONSUMER) == "\u00e9" * MAX_CONSUMER


def test_url_text_percent_encodes_control_characters() -> None:
    """Control characters in a path are percent-encoded, never sent raw."""
    assert clean_url_text("/a\nb\x7f\tc", 100) == "/a%0Ab%7F%09c"
    assert clean_url_text("/caf\u00e9", 100) == "/caf\u00e9"
    assert clean_url_text("/" + "x" * 5000, 4096) == "/" + "x" * 4095


def test_validation_errors_are_bounded() -> None:
    """At most 50 items; each string within its limit; type optional."""
    items = [{"field": "f" * 600, "message": "m" * 2000, "type": "t" * 300}] * 60 + ["junk"]
    cleaned = clean_validation_errors(items)
    assert cleaned is not None and len(cleaned) == MAX_VALIDATION_ERRORS
    assert (len(cleaned[0]["field"]), len(cleaned[0]["message"]), len(cleaned[0]["type"])) == (512, 1024, 256)
    assert clean_validation_errors([{"field": "a", "message": "b"}]) == [{"field": "a", "message": "b"}]
    assert clean_validation_errors([]) is None
    assert clean_validation_errors("nope") is None


WIRE_EVENTS = [
    {
        "ts": "2026-06-03T12:00:00.000+00:00",
        "method": "GET",
        "route": "/users/{id}",
        "path": "/users/1",
        "status": 200,
        "duration_ms": 3,
        "consumer": None,
        "error": None,
    },
    {
        "ts": "2026-06-03T12:00:00.001+00:00",
        "method": "POST",
        "route": '/caf\u00e9/"q"\\{x}',
        "path": "/caf\u00e9/%0A\u2028\t",
        "status": 500,
        "duration_ms": 0,
        "consumer": "k\u00e9y\u0001",
        "error": 'ValueError: line\nbreak "quoted" \U0001f600',
    },
    {  # validation errors: the general encoder
        "ts": "2026-06-03T12:00:00.002+00:00",
        "method": "PUT",
        "route": "/items/{id}",
        "path": "/items/2",
        "status": 422,
        "duration_ms": 12,
        "consumer": "acme",
        "error": None,
        "validation_errors": [{"field": "body.price", "message": "not a number", "type": "float_parsing"}],
    },
    {  # read back from an older spool file: a field of an unexpected type, the general encoder
        "ts": "2026-06-03T12:00:00.003+00:00",
        "method": "GET",
        "route": "/r",
        "path": "/r",
        "status": 200.0,
        "duration_ms": 1,
        "consumer": None,
        "error": None,
    },
]


def test_batch_body_carries_exactly_the_contract_fields() -> None:
    """The body is {"events": [...]} with the eight fields, null consumer/error included."""
    event = RequestEvent(
        end_time_ns=1_780_488_000_000_000_000,
        method="GET",
        route="/users/{id}",
        path="/users/1",
        status=200,
        duration_ms=3,
        consumer=None,
        error=None,
    )
    body = json.loads(encode_batch([event]))
    assert body == {"events": [WIRE_EVENTS[0]]}


def test_the_body_is_what_json_dumps_writes() -> None:
    """Events written field by field come out byte for byte as json.dumps writes them (UTF-8, compact)."""
    expected = json.dumps({"events": WIRE_EVENTS}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert encode_events(WIRE_EVENTS) == expected
    assert json.loads(encode_events(WIRE_EVENTS)) == {"events": WIRE_EVENTS}
    assert encode_events([]) == b'{"events":[]}'


def _event(**fields: object) -> RequestEvent:
    usual = RequestEvent(1_780_488_000_042_000_000, "GET", "/users/{id}", "/users/1", 200, 3, None, None)
    return usual._replace(**fields)


@pytest.mark.parametrize(
    "event",
    [
        _event(),
        _event(consumer="key_live_1", error="RuntimeError: boom"),
        _event(route='/q/"quoted"\\back', path="/caf\u00e9/\u65e5\u672c/\ufffd", consumer="tab\there\x01"),
        _event(validation_errors=[{"field": "body.price", "message": "must be > 0", "type": "value_error"}]),
        _event(status=True),  # not an int: written by json.dumps, as true
        _event(duration_ms=1.5),
        _event(consumer=b"raw"),  # not text at all: the as_dict path says what json.dumps says
    ],
    ids=["usual", "consumer-error", "escapes-unicode", "validation-errors", "bool-status", "float", "bytes"],
)
def test_an_event_written_from_its_tuple_is_what_json_dumps_writes(event: RequestEvent) -> None:
    """``event_json`` writes what ``json.dumps(event.as_dict())`` does, byte for byte (or raises)."""
    try:
        expected = json.dumps(event.as_dict(), ensure_ascii=False, separators=(",", ":"))
    except TypeError:
        with pytest.raises(TypeError):
            event_json(event)
        return
    assert event_json(event) == expected
    assert encode_batch([event, event]) == encode_events([event.as_dict(), event.as_dict()])


def test_a_batch_of_written_events_splits_and_encodes_like_one_of_wire_dicts() -> None:
    """A batch cut from memory (JSON texts) has the same body, events and halves as one of wire dicts."""
    events = [_event(path=f"/users/{n}", duration_ms=n) for n in range(5)]
    written = Batch.encoded([event_json(event) for event in events])
    dicts = Batch([event.as_dict() for event in events])
    assert written.body() == dicts.body()
    assert written.events == dicts.events
    assert (len(written), written.divisible()) == (5, 5)
    halves = written.split(3)
    assert [h.body() for h in halves] == [h.body() for h in dicts.split(3)]
    assert len({written.batch_id, *(h.batch_id for h in halves)}) == 3


def test_repeated_values_and_timestamps_are_written_as_json_dumps_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept JSON literals (methods, routes, consumers) and kept seconds never change what is written.

    Past the limit of kept literals new values are escaped each time; timestamps crossing a second
    (and going back, as events of several threads do) take their own second's text.
    """
    from beacon_otel.contract import event as module

    monkeypatch.setattr(module, "_repeated", {})
    monkeypatch.setattr(module, "_REPEATED_LIMIT", 3)
    second = 1_780_488_000_000_000_000
    times = [second + 999_000_000, second + 1_000_000_000, second + 1_001_000_000, second + 5_000_000, second]
    for n, end in enumerate(times * 2):
        event = _event(end_time_ns=end, route=f"/r{n % 4}/{{id}}", consumer=f"c\u00e9-{n % 5}\t")
        assert event_json(event) == json.dumps(event.as_dict(), ensure_ascii=False, separators=(",", ":"))
    assert len(module._repeated) == 3
    assert format_ts(second + 999_999_999) == "2026-06-03T12:00:00.999+00:00"
    assert format_ts(second + 1_000_000_000) == "2026-06-03T12:00:01.000+00:00"
