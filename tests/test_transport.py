"""Transport decisions as pure functions, and the HTTP transport against a real local server."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from beacon_otel import BeaconConfig
from beacon_otel.transport import (
    MAX_RETRY_AFTER,
    IngestTransport,
    Verdict,
    backoff_delay,
    parse_retry_after,
    verdict_for_status,
)
from tests.conftest import url_of


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.ACCEPTED),
        (202, Verdict.ACCEPTED),
        (204, Verdict.ACCEPTED),
        (400, Verdict.REJECTED),
        (401, Verdict.REJECTED),
        (403, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (413, Verdict.SPLIT),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (301, Verdict.REJECTED),
        (307, Verdict.REJECTED),
    ],
)
def test_status_table(status: int, verdict: Verdict) -> None:
    """Each status gets the treatment the contract prescribes; redirects are refused."""
    assert verdict_for_status(status) is verdict


NOW = datetime(2026, 6, 3, 12, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("100000", MAX_RETRY_AFTER),
        (format_datetime(datetime(2026, 6, 3, 12, 0, 30, tzinfo=timezone.utc), usegmt=True), 30.0),
        (format_datetime(datetime(2026, 6, 3, 11, 0, 0, tzinfo=timezone.utc), usegmt=True), 0.0),
        ("Wed, 03 Jun 2026 12:00:10 GMT", 10.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_seconds_or_http_date(header: str | None, seconds: float | None) -> None:
    """Retry-After as delta-seconds or HTTP date, clamped to [0, MAX_RETRY_AFTER]."""
    assert parse_retry_after(header, now=NOW) == seconds


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    """The ceiling doubles per attempt up to the cap; jitter spans [0, ceiling]."""
    assert [backoff_delay(n, rand=lambda: 1.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(3, rand=lambda: 0.0) == 0.0
    assert backoff_delay(10_000, rand=lambda: 0.5) == 15.0
    assert all(0 <= backoff_delay(4) <= 16 for _ in range(100))


def test_post_carries_bearer_key_json_user_agent_and_idempotency_key(server: Any) -> None:
    """The request is POST {url}/v1/ingest with Bearer auth, application/json and the batch id."""
    transport = IngestTransport(BeaconConfig(ingest_key="key-9", ingest_url=url_of(server)))
    outcome = transport.send(b'{"events":[]}', "0f3c9a")
    second = transport.send(b'{"events":[]}', "77aa01")
    transport.close()
    assert second.verdict is Verdict.ACCEPTED
    assert [headers["Idempotency-Key"] for _, headers, _ in server.requests] == ["0f3c9a", "77aa01"]
    assert (outcome.verdict, outcome.status) == (Verdict.ACCEPTED, 202)
    path, headers, body = server.requests[0]
    assert path == "/v1/ingest"
    assert headers["Authorization"] == "Bearer key-9"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("beacon-otel/")
    assert "Content-Encoding" not in headers
    assert body == b'{"events":[]}'


def test_gzip_when_compression_is_on(server: Any) -> None:
    """compression=True gzips the body and says so."""
    transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url=url_of(server), compression=True))
    transport.send(b'{"events":[1]}', "b1")
    transport.close()
    _, headers, body = server.requests[0]
    assert headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == {"events": [1]}


def test_retry_after_is_read_from_429(server: Any) -> None:
    """A 429 with Retry-After: 2 is a RETRY that waits 2 s."""
    server.script = [(429, {"Retry-After": "2"})]
    transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url=url_of(server)))
    outcome = transport.send(b"{}", "b1")
    transport.close()
    assert (outcome.verdict, outcome.status, outcome.retry_after) == (Verdict.RETRY, 429, 2.0)


def test_redirects_are_not_followed(server: Any) -> None:
    """A 307 to elsewhere is a refusal: the key is never replayed to another host."""
    server.script = [(307, {"Location": "http://127.0.0.2:1/steal"})]
    transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url=url_of(server)))
    outcome = transport.send(b"{}", "b1")
    transport.close()
    assert (outcome.verdict, outcome.status) == (Verdict.REJECTED, 307)
    assert len(server.requests) == 1


def test_connection_refused_is_transient() -> None:
    """Nobody listening is a RETRY, not an exception."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = IngestTransport(
        BeaconConfig(ingest_key="k", ingest_url=f"http://127.0.0.1:{port}", timeout=1.0)
    )
    outcome = transport.send(b"{}", "b1")
    transport.close()
    assert outcome.verdict is Verdict.RETRY and outcome.status is None
    assert "connection" in outcome.detail


def test_the_key_never_appears_in_reprs() -> None:
    """The bearer auth object hides the key."""
    transport = IngestTransport(BeaconConfig(ingest_key="very-secret", ingest_url="https://example.com"))
    assert "very-secret" not in repr(transport._auth)


def test_own_requests_are_not_traced(server: Any) -> None:
    """With requests instrumented, the exporter's POST creates no span."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    RequestsInstrumentor().instrument(tracer_provider=provider)
    try:
        import requests

        requests.get(url_of(server) + "/probe", timeout=2).close()
        assert len(exporter.get_finished_spans()) == 1  # the instrumentation is live
        transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url=url_of(server)))
        transport.send(b"{}", "b1")
        transport.close()
        assert len(exporter.get_finished_spans()) == 1
    finally:
        RequestsInstrumentor().uninstrument()
        provider.shutdown()


def test_proxy_settings_are_read_once_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY applies (read when the session is made); NO_PROXY is respected."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url="https://ingest.example.com"))
    session = transport._new_session()
    assert session.proxies.get("https") == "http://proxy.example:3128"
    assert session.trust_env is False  # nor per request, nor ~/.netrc
    transport.close()
    monkeypatch.setenv("NO_PROXY", "ingest.example.com")
    transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url="https://ingest.example.com"))
    assert "https" not in transport._new_session().proxies
    transport.close()
