"""The ingest contract: event fields, their limits, sanitising and serialising."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NamedTuple

MAX_METHOD = 16
MAX_ROUTE = 2048
MAX_PATH = 4096
MAX_CONSUMER = 256
MAX_ERROR = 8192
MAX_VALIDATION_ERRORS = 50
MAX_VALIDATION_FIELD = 512
MAX_VALIDATION_MESSAGE = 1024
MAX_VALIDATION_TYPE = 256

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_METHOD = re.compile(r"[^A-Z0-9!#$%&'*+.^_`|~-]")


class RequestEvent(NamedTuple):
    """One request as the ingest sees it; ``end_time_ns`` becomes ``ts`` when serialised.

    A named tuple: the request thread makes one per request (in C, see ``mapping``), and the
    collector stops tracking a tuple of plain values, so queued events cost it nothing.
    """

    end_time_ns: int
    method: str
    route: str
    path: str
    status: int
    duration_ms: int
    consumer: str | None
    error: str | None
    validation_errors: list[dict[str, str]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The event exactly as it goes over the wire."""
        end_time_ns, method, route, path, status, duration_ms, consumer, error, validation_errors = self
        event: dict[str, Any] = {
            "ts": format_ts(end_time_ns),
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "consumer": consumer,
            "error": error,
        }
        if validation_errors:
            event["validation_errors"] = validation_errors
        return event


_second_cache: tuple[int, str] = (-1, "")
_MILLISECONDS = [f".{ms:03d}+00:00" for ms in range(1000)]
"""Each millisecond's tail of a timestamp: a ``:03d`` format costs more than the rest of the time."""


def format_ts(time_ns: int) -> str:
    """ISO 8601 in UTC with an explicit offset, millisecond precision."""
    milliseconds = time_ns // 1_000_000
    second, text = _second_cache
    if milliseconds // 1000 != second:
        text = _format_second(milliseconds // 1000)
    return text + _MILLISECONDS[milliseconds % 1000]


def _format_second(second: int) -> str:
    """A second's part of a timestamp, kept: the events of one batch mostly share their second."""
    global _second_cache
    text = datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    _second_cache = (second, text)  # one assignment: a reader sees the old pair or the new one
    return text


def encode_batch(events: list[RequestEvent]) -> bytes:
    """The request body for a batch: ``{"events": [...]}`` as UTF-8 JSON."""
    return join_events([event_json(event) for event in events])


def encode_events(events: list[dict[str, Any]]) -> bytes:
    """The request body for events already in their wire form: ``{"events": [...]}``, UTF-8."""
    return join_events([_event_json(event) for event in events])


def join_events(texts: list[str]) -> bytes:
    """The request body from each event's JSON text (``event_json``): ``{"events": [...]}``, UTF-8."""
    # Strings were sanitised to valid UTF-8 already, so non-ASCII text is written as it is.
    return ('{"events":[' + ",".join(texts) + "]}").encode("utf-8")


def event_json(event: RequestEvent) -> str:
    """One event as compact JSON, byte for byte what ``json.dumps(event.as_dict())`` writes.

    Written straight from the tuple, with no wire dict in between: the delivery thread does
    this for every event, holding the GIL the request threads are waiting for. Anything but the
    usual event (validation errors, a field of another type) goes through ``as_dict``.
    """
    end_time_ns, method, route, path, status, duration_ms, consumer, error, validation_errors = event
    if (
        validation_errors
        or type(end_time_ns) is not int
        or type(method) is not str
        or type(route) is not str
        or type(path) is not str
        or type(status) is not int
        or type(duration_ms) is not int
        or not (consumer is None or type(consumer) is str)
        or not (error is None or type(error) is str)
    ):
        return json.dumps(event.as_dict(), ensure_ascii=False, separators=(",", ":"))
    # format_ts and _json_repeated inlined: a Python call costs as much as what they do.
    milliseconds = end_time_ns // 1_000_000
    second, ts = _second_cache
    if milliseconds // 1000 != second:
        ts = _format_second(milliseconds // 1000)
    repeated = _repeated
    # ts is digits and punctuation only: nothing in it to escape.
    return (
        f'{{"ts":"{ts}{_MILLISECONDS[milliseconds % 1000]}",'
        f'"method":{repeated.get(method) or _json_repeated(method)},'
        f'"route":{repeated.get(route) or _json_repeated(route)},"path":{_json_string(path)},'
        f'"status":{status},"duration_ms":{duration_ms},'
        f'"consumer":{"null" if consumer is None else repeated.get(consumer) or _json_repeated(consumer)},'
        f'"error":{"null" if error is None else _json_string(error)}}}'
    )


_REPEATED_LIMIT = 4096
"""Distinct methods, routes and consumers whose JSON literal is kept (a few hundred kilobytes at most)."""
_repeated: dict[str, str] = {}


def _json_repeated(text: str) -> str:
    """The JSON literal of a value that repeats from event to event (a method, a route, a consumer).

    Looked up rather than escaped again: a fifth of the cost. Past ``_REPEATED_LIMIT`` distinct
    values (consumers of a very large API), new ones are escaped each time, as paths are.
    """
    literal = _repeated.get(text)
    if literal is None:
        literal = _json_string(text)
        if len(_repeated) < _REPEATED_LIMIT:
            _repeated[text] = literal
    return literal


def _event_json(event: dict[str, Any]) -> str:
    """One wire event as compact JSON: what ``json.dumps`` writes, keys in the contract's order.

    The usual event (the fields ``as_dict`` makes, no validation errors) is written field by
    field with the json module's own C string encoder: a third of what the general encoder
    costs per event on the delivery thread. Anything else goes through ``json.dumps``.
    """
    ts, method, route, path = event.get("ts"), event.get("method"), event.get("route"), event.get("path")
    status, duration_ms = event.get("status"), event.get("duration_ms")
    consumer, error = event.get("consumer"), event.get("error")
    if not (
        len(event) == 8
        and type(ts) is str
        and type(method) is str
        and type(route) is str
        and type(path) is str
        and type(status) is int
        and type(duration_ms) is int
        and (consumer is None or type(consumer) is str)
        and (error is None or type(error) is str)
    ):
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return (
        f'{{"ts":{_json_string(ts)},"method":{_json_string(method)},"route":{_json_string(route)},'
        f'"path":{_json_string(path)},"status":{status},"duration_ms":{duration_ms},'
        f'"consumer":{"null" if consumer is None else _json_string(consumer)},'
        f'"error":{"null" if error is None else _json_string(error)}}}'
    )


_json_string: Callable[[str], str] = json.encoder.encode_basestring
"""A JSON string literal, non-ASCII kept (the C encoder json.dumps uses with ensure_ascii=False)."""


def clean_text(value: object, limit: int) -> str:
    """Valid UTF-8 text within ``limit`` characters, NUL replaced; never raises."""
    text = _as_text(value)
    if not (text.isascii() and "\x00" not in text):
        text = _valid_unicode(text).replace("\x00", "\ufffd")
    return text[:limit]


def clean_url_text(value: object, limit: int) -> str:
    """Like ``clean_text`` but control characters are percent-encoded, as a URL would carry them."""
    text = _as_text(value)
    if not (text.isascii() and text.isprintable()):
        text = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", _valid_unicode(text))
    return text[:limit]


STANDARD_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


def clean_method(value: object) -> str:
    """An upper-case HTTP method token of at most 16 characters (``OTHER`` when nothing is left)."""
    if type(value) is str and value in STANDARD_METHODS:
        return value  # nearly every request: nothing to clean
    text = _as_text(value).upper()
    if not (text.isalpha() and text.isascii() and len(text) <= MAX_METHOD):
        text = _NOT_METHOD.sub("", text)[:MAX_METHOD]
    return text or "OTHER"


def clean_validation_errors(items: object) -> list[dict[str, str]] | None:
    """At most 50 ``{"field", "message", "type"}`` items, each string within its limit."""
    if not isinstance(items, (list, tuple)):
        return None
    cleaned: list[dict[str, str]] = []
    for item in items[:MAX_VALIDATION_ERRORS]:
        if not isinstance(item, dict):
            continue
        entry = {
            "field": clean_text(item.get("field", ""), MAX_VALIDATION_FIELD),
            "message": clean_text(item.get("message", ""), MAX_VALIDATION_MESSAGE),
        }
        if item.get("type") is not None:
            entry["type"] = clean_text(item["type"], MAX_VALIDATION_TYPE)
        cleaned.append(entry)
    return cleaned or None


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _valid_unicode(text: str) -> str:
    # Lone surrogates (from surrogateescape'd bytes or \ud800 escapes) are not valid UTF-8.
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
