"""The contract's checks: whether an ingest request, its body and each event are acceptable.

A request is either refused as a whole (`_Refused`, with its HTTP status) or its events
are returned; every check is as strict as the contract.

The work each request may cost is bounded before it is done, so one small request cannot
exhaust the machine: the body after decompression (MAX_BODY_BYTES), the JSON values it may
build (MAX_JSON_VALUES, counted on the bytes before parsing), the events of a batch
(MAX_EVENTS) and the problems looked for (MAX_PROBLEMS). A batch over a bound gets 413, on
which the client splits it and sends the halves.
"""

from __future__ import annotations

import gzip
import hmac
import io
import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_PROBLEMS = 100  # enough to diagnose a bad batch without echoing a 10 MiB one back
MAX_EVENTS = 10_000  # 100 times the client's default batch
# Every JSON value and key but the first of its object or array follows a "," or a ":", and
# every object or array opens with "{" or "[": their count bounds what parsing builds (about
# 100 bytes each at worst), even when strings hold some. Ten thousand usual events need
# 200,000; the largest valid event, 105,000.
MAX_JSON_VALUES = 300_000
_MAX_FIELD_NAME = 128  # an unknown key's name, as shown in a problem
_INT64_MAX = 2**63 - 1  # SQLite's INTEGER; a larger duration is no longer a duration
# Extended ISO 8601 with an explicit offset; fromisoformat alone also takes naive and basic forms.
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,9}))?)?(?:Z|[+-]\d{2}:\d{2})")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NUL_RE = re.compile(r"\x00")
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")

Problem = dict[str, Any]


class _Refused(Exception):
    """A request the ingest refuses as a whole, with its HTTP status."""

    def __init__(self, status: int, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []


def _text_problem(value: object, max_len: int, *, min_len: int = 0, line: bool = False) -> str | None:
    """Return why `value` is not an acceptable contract string, or None."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not min_len <= len(value) <= max_len:
        return f"length {len(value)} is outside {min_len}..{max_len}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # the JSON decoder turns a "\ud800" escape into a lone surrogate
        return "contains a lone surrogate (not valid UTF-8)"
    # Clients strip control characters from request-line fields (method, route, path);
    # free text may keep newlines and tabs, but a NUL is always a client bug.
    if (_CONTROL_RE if line else _NUL_RE).search(value):
        return "contains a control character" if line else "contains a NUL character"
    return None


def _nullable_text_problem(value: object, max_len: int) -> str | None:
    """Return why `value` is neither null nor an acceptable string, or None."""
    return None if value is None else _text_problem(value, max_len)


def _ts_problem(value: object) -> str | None:
    """Return why `value` is not an ISO 8601 time with an explicit offset, or None."""
    if problem := _text_problem(value, 64, min_len=1):
        return problem
    if not (match := _TS_RE.fullmatch(str(value))):
        return "expected ISO 8601 with an explicit offset, e.g. 2026-06-03T12:00:00.000+00:00"
    try:
        return None if parse_ts(match.group(0)).tzinfo else "naive time (no offset)"
    except ValueError as exc:
        return f"not a valid date/time: {exc}"


def parse_ts(text: str) -> datetime:
    """Parse a contract timestamp the same way on every Python (3.10 lacks "Z", 7+ digits)."""
    text = text.replace("Z", "+00:00")
    if (match := _TS_RE.fullmatch(text)) and (fraction := match.group(1)):
        text = text.replace("." + fraction, "." + fraction[:6].ljust(6, "0"))
    return datetime.fromisoformat(text)


def _method_problem(value: object) -> str | None:
    """Return why `value` is not an upper-case ASCII HTTP method, or None."""
    if problem := _text_problem(value, 16, min_len=1, line=True):
        return problem
    if not str(value).isascii() or " " in str(value):
        return "must be ASCII without spaces"
    return None if value == str(value).upper() else "must be upper case"


def _path_problem(value: object, max_len: int, *, query: bool) -> str | None:
    """Return why `value` is not an acceptable route (query=True) or path, or None."""
    if problem := _text_problem(value, max_len, min_len=1, line=True):
        return problem
    if not str(value).startswith("/"):
        return "must start with '/'"
    return None if query or "?" not in str(value) else "must not contain a query string"


def _int_problem(value: object, low: int, high: int) -> str | None:
    """Return why `value` is not a JSON integer in low..high, or None."""
    if type(value) is not int:  # bool is an int subclass, and 1.0 is not an integer here
        return f"expected an integer, got {type(value).__name__}"
    return None if low <= value <= high else f"{value} is outside {low}..{high}"


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "ts": _ts_problem,
    "method": _method_problem,
    "route": lambda v: _path_problem(v, 2048, query=True),
    "path": lambda v: _path_problem(v, 4096, query=False),
    "status": lambda v: _int_problem(v, 100, 599),
    "duration_ms": lambda v: _int_problem(v, 0, _INT64_MAX),
    "consumer": lambda v: _nullable_text_problem(v, 256),
    "error": lambda v: _nullable_text_problem(v, 8192),
}
_VALIDATION_ERROR_LIMITS = {"field": 512, "message": 1024, "type": 256}


def _validation_errors_problems(value: object) -> Iterator[tuple[str, str | None]]:
    """(field, problem or None) for the optional validation_errors array, as they are found."""
    if not isinstance(value, list) or not 1 <= len(value) <= 50:
        yield ("validation_errors", "expected an array of 1..50 items (omit it when empty)")
        return
    for i, item in enumerate(value):
        name = f"validation_errors[{i}]"
        if not isinstance(item, dict):
            yield (name, "expected an object")
            continue
        yield from ((f"{name}.{k}", "unknown key") for k in item if k not in _VALIDATION_ERROR_LIMITS)
        yield from ((f"{name}.{k}", "missing") for k in ("field", "message") if k not in item)
        for k, limit in _VALIDATION_ERROR_LIMITS.items():
            if k in item:
                yield (f"{name}.{k}", _text_problem(item[k], limit))


def _event_problems(event: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(field, problem or None) for each check of one event, in a fixed order, as they are made."""
    yield from ((k, "unknown key") for k in event if k not in _CHECKS and k != "validation_errors")
    yield from ((k, "missing") for k in _CHECKS if k not in event)
    yield from ((k, check(event[k])) for k, check in _CHECKS.items() if k in event)
    if "validation_errors" in event:
        yield from _validation_errors_problems(event["validation_errors"])


def validate_event(event: object, index: int = 0, limit: int = MAX_PROBLEMS) -> list[Problem]:
    """Return the contract violations in one event, the first ``limit`` (empty when valid)."""
    if not isinstance(event, dict):
        return [{"index": index, "field": None, "problem": "expected an object"}][:limit]
    found = ((f, p) for f, p in _event_problems(event) if p)
    return [{"index": index, "field": _clip(f), "problem": p} for f, p in itertools.islice(found, limit)]


def _clip(name: str) -> str:
    """A field name as shown in a problem: a sender's key may be megabytes long."""
    return name if len(name) <= _MAX_FIELD_NAME else name[: _MAX_FIELD_NAME - 3] + "..."


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing duplicate keys (servers disagree on which one wins)."""
    if len(obj := dict(pairs)) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return obj


def _not_json(name: str) -> None:
    """Refuse NaN and Infinity, which Python accepts but JSON does not."""
    raise ValueError(f"{name} is not valid JSON")


def parse_batch(headers: Any, body: bytes | _Refused, ingest_key: str | None) -> list[dict[str, Any]]:
    """Check auth, headers and body exactly as the contract says; return the events."""
    auth = headers.get("Authorization", "")
    key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
    if not key or key != key.strip():
        raise _Refused(401, "expected 'Authorization: Bearer <ingest key>'")
    if ingest_key is not None and not hmac.compare_digest(key.encode(), ingest_key.encode()):
        raise _Refused(401, "unknown ingest key")
    content_type = headers.get("Content-Type", "")
    media_type, _, params = content_type.replace(" ", "").lower().partition(";")
    # The only parameter JSON can carry is charset, and JSON is UTF-8 (RFC 8259).
    if media_type != "application/json" or params not in ("", "charset=utf-8"):
        raise _Refused(400, f"Content-Type must be application/json, got {content_type!r}")
    encoding = headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() != "gzip":
        raise _Refused(400, f"unsupported Content-Encoding {encoding!r} (only gzip)")
    if isinstance(body, _Refused):
        raise body
    raw = _gunzip(body) if encoding is not None else body
    if (values := sum(raw.count(c) for c in (b",", b":", b"{", b"["))) > MAX_JSON_VALUES:
        raise _Refused(413, f"body holds up to {values} JSON values, over {MAX_JSON_VALUES}: split the batch")
    try:
        doc = json.loads(raw.decode(), object_pairs_hook=_unique_keys, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        raise _Refused(400, f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"events"}:
        raise _Refused(400, 'expected a JSON object with exactly one key, "events"')
    events = doc["events"]
    if not isinstance(events, list) or not events:
        raise _Refused(400, '"events" must be a non-empty array')
    if len(events) > MAX_EVENTS:
        raise _Refused(413, f"{len(events)} events in one batch, over {MAX_EVENTS}: split the batch")
    problems: list[Problem] = []
    for checked, event in enumerate(events, 1):
        problems += validate_event(event, checked - 1, MAX_PROBLEMS - len(problems))
        if len(problems) >= MAX_PROBLEMS:
            break  # enough to diagnose it: the rest of a hostile batch is not worth the work
    if problems:
        bad = len({p["index"] for p in problems})
        where = "" if checked == len(events) else f" in the first {checked} of {len(events)}"
        raise _Refused(400, f"{bad} invalid event(s){where}: the whole batch is rejected", problems)
    return events


def parse_idempotency_key(headers: Any) -> str | None:
    """The batch's Idempotency-Key (docs/ingest-protocol.md), None when not sent."""
    key = headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise _Refused(400, f"Idempotency-Key must be 1..255 visible ASCII characters, got {key[:64]!r}")
    return key  # type: ignore[no-any-return]  # headers is an email.message.Message


def _gunzip(body: bytes) -> bytes:
    """Decompress a gzip body, refusing one that inflates past the size limit."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
            data = f.read(MAX_BODY_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise _Refused(400, f"invalid gzip body: {exc}") from None
    if len(data) > MAX_BODY_BYTES:
        raise _Refused(413, f"decompressed body is over {MAX_BODY_BYTES} bytes")
    return data
