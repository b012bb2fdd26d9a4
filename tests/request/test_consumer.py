"""Consumer identification: the contract's header precedence, hashing and the resolver."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from beacon_otel.request.consumer import ConsumerRules, hash_authorization


def asgi(**headers: str) -> dict[str, Any]:
    return {
        "headers": [(k.replace("_", "-").lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    }


def environ(**headers: str) -> dict[str, str]:
    return {"HTTP_" + k.upper(): v for k, v in headers.items()}


def test_authorization_hash_is_hash_plus_12_hex_of_sha256() -> None:
    """hash_ + the first 12 hex characters of SHA-256 of the whole header value."""
    expected = "hash_" + hashlib.sha256(b"Bearer abc").hexdigest()[:12]
    assert hash_authorization(b"Bearer abc") == expected
    assert len(expected) == 17


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x_tenant": "t1", "x_api_key": "k1", "authorization": "Bearer z"}, "t1"),
        ({"x_api_key": "k1", "authorization": "Bearer z"}, "k1"),
        ({"authorization": "Bearer z"}, hash_authorization(b"Bearer z")),
        ({}, None),
        ({"x_api_key": ""}, None),
    ],
)
def test_precedence_is_configured_then_api_key_then_authorization(
    headers: dict[str, str], expected: str | None
) -> None:
    """Configured header as-is, else X-API-Key as-is, else hashed Authorization; ASGI and WSGI agree."""
    rules = ConsumerRules("X-Tenant", None)
    assert rules.from_asgi(asgi(**headers)) == expected
    assert rules.from_environ(environ(**headers)) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x_api_key": "k1"}, "k1"),
        ({"x_api_key": "k1", "authorization": "Bearer z"}, "k1"),
        ({"authorization": "Bearer z"}, hash_authorization(b"Bearer z")),
        ({"x_api_key": "", "authorization": "Bearer z"}, hash_authorization(b"Bearer z")),
        ({"x_api_key": ""}, None),
        ({"authorization": ""}, None),
        ({"x_api_key": "k\x00ey"}, "k\ufffdey"),
        ({"x_api_key": "k" * 300}, "k" * 256),
        ({"x_tenant": "t1"}, None),
        ({}, None),
    ],
)
def test_without_a_configured_header_the_usual_request_takes_the_same_rules(
    headers: dict[str, str], expected: str | None
) -> None:
    """The quick paths for one credential header (ASGI and WSGI) give what the contract's rules give."""
    rules = ConsumerRules(None, None)
    assert rules.from_asgi(asgi(**headers)) == expected
    assert rules.from_environ(environ(**headers)) == expected


def test_a_repeated_header_counts_once_its_first_value() -> None:
    """Two X-API-Key headers: the first one names the consumer, on the quick path too."""
    rules = ConsumerRules(None, None)
    assert rules.from_asgi({"headers": [(b"x-api-key", b"first"), (b"x-api-key", b"second")]}) == "first"


def test_non_ascii_header_bytes_give_the_same_consumer_on_asgi_and_wsgi() -> None:
    """WSGI's latin-1 strings and ASGI's raw bytes identify the same caller."""
    rules = ConsumerRules(None, None)
    raw = "caf\u00e9".encode()
    wsgi_value = raw.decode("latin-1")
    assert (
        rules.from_environ({"HTTP_X_API_KEY": wsgi_value})
        == rules.from_asgi({"headers": [(b"x-api-key", raw)]})
        == "caf\u00e9"
    )
    assert rules.from_environ({"HTTP_AUTHORIZATION": wsgi_value}) == hash_authorization(raw)


def test_long_consumer_is_truncated_to_256() -> None:
    """A 2 kB header becomes a 256-character consumer."""
    rules = ConsumerRules(None, None)
    assert rules.from_asgi(asgi(x_api_key="k" * 2048)) == "k" * 256


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"key-123", "key-123"),
        (b"k\x00ey", "k\ufffdey"),  # NUL is not valid in the contract's strings
        (b"k\xffey", "k\ufffdey"),  # invalid UTF-8
        (b"\x00" + b"k" * 300, "\ufffd" + "k" * 255),
    ],
)
def test_header_values_become_clean_text(raw: bytes, expected: str) -> None:
    """Plain ASCII passes as is; NUL, invalid UTF-8 and excess length are cleaned."""
    rules = ConsumerRules(None, None)
    assert rules.from_asgi({"headers": [(b"x-api-key", raw)]}) == expected


def test_resolver_overrides_headers_and_gets_the_request() -> None:
    """The resolver receives the framework's request object and wins over every header."""
    seen: list[Any] = []

    def resolver(request: Any) -> str:
        seen.append(request)
        return "tenant-9"

    rules = ConsumerRules("X-Tenant", resolver)
    scope = asgi(x_tenant="t1")
    assert rules.from_asgi(scope) == "tenant-9"
    request = object()
    assert rules.from_environ(environ(x_api_key="k"), request) == "tenant-9"
    assert seen == [scope, request]


@pytest.mark.parametrize(
    ("returned", "expected"), [(None, None), ("", None), (42, "42"), ("x" * 300, "x" * 256)]
)
def test_resolver_results_are_cleaned(returned: Any, expected: str | None) -> None:
    """None or empty means no consumer; other values become bounded strings."""
    rules = ConsumerRules(None, lambda request: returned)
    assert rules.resolve(object()) == expected


def test_raising_resolver_counts_as_none() -> None:
    """A resolver that raises is no consumer, never an exception."""

    def resolver(request: Any) -> str:
        raise RuntimeError("boom")

    assert ConsumerRules(None, resolver).from_asgi(asgi(x_api_key="k")) is None


def test_a_resolver_answer_whose_text_raises_counts_as_none() -> None:
    """A lazy object whose ``str()`` raises (Django's SimpleLazyObject, database down) is no consumer."""

    class Lazy:
        def __str__(self) -> str:
            raise ConnectionError("database is down")

    rules = ConsumerRules(None, lambda request: Lazy())
    assert rules.from_asgi(asgi(x_api_key="k")) is None
    assert rules.from_environ(environ(x_api_key="k")) is None


@pytest.mark.parametrize(
    ("joined", "expected"), [("first,second", "first"), (" ,second", "second"), (",", None)]
)
def test_a_wsgi_header_joined_from_repeats_gives_its_first_value(joined: str, expected: str | None) -> None:
    """WSGI servers join a repeated header with commas: its first non-empty value, as under ASGI."""
    rules = ConsumerRules(None, None)
    assert rules.from_environ(environ(x_api_key=joined)) == expected
    assert rules.from_asgi(asgi(x_api_key=joined)) == expected


def test_an_async_resolver_is_awaited_where_no_event_loop_runs() -> None:
    """Under WSGI an ``async def`` resolver is run to its answer (not its coroutine's repr)."""

    async def resolver(request: Any) -> str:
        return "async-consumer"

    assert ConsumerRules(None, resolver).from_environ(environ(x_api_key="k")) == "async-consumer"


def test_an_async_resolver_past_its_time_limit_is_no_consumer() -> None:
    """An awaited resolver is bounded by the resolver timeout."""
    import asyncio

    async def resolver(request: Any) -> str:
        await asyncio.sleep(30)
        return "late"

    assert ConsumerRules(None, resolver, timeout=0.01).from_environ(environ(x_api_key="k")) is None
