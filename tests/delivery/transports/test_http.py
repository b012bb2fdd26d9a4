"""Transport decisions as pure functions, and the HTTP transport against a real local server."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from beacon_otel.delivery.transports.http import (
    MAX_RETRY_AFTER,
    FailureKind,
    IngestTransport,
    InMemoryTransport,
    Outcome,
    Verdict,
    parse_retry_after,
    verdict_for_status,
)
from tests.conftest import url_of
from tests.support.misbehaving import (
    Certificate,
    ConnectProxy,
    answer,
    huge_body,
    make_certificate,
    misbehaving,
    trickled_body,
    trickled_headers,
)
from tests.support.waiting import wait_until


def transport_to(base_url: str, key: str = "k", **options: Any) -> IngestTransport:
    """A transport to ``base_url``/v1/ingest, as the processor builds it from a config."""
    url = base_url if base_url.endswith("/v1/ingest") else base_url + "/v1/ingest"
    return IngestTransport(url=url, key=key, timeout=options.pop("timeout", 5.0), **options)


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


def test_post_carries_bearer_key_json_user_agent_and_idempotency_key(server: Any) -> None:
    """The request is POST {url}/v1/ingest with Bearer auth, application/json and the batch id."""
    transport = transport_to(url_of(server), key="key-9")
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
    transport = transport_to(url_of(server), compression=True)
    transport.send(b'{"events":[1]}', "b1")
    transport.close()
    _, headers, body = server.requests[0]
    assert headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == {"events": [1]}


def test_retry_after_is_read_from_429(server: Any) -> None:
    """A 429 with Retry-After: 2 is a RETRY that waits 2 s."""
    server.script = [(429, {"Retry-After": "2"})]
    transport = transport_to(url_of(server))
    outcome = transport.send(b"{}", "b1")
    transport.close()
    assert (outcome.verdict, outcome.status, outcome.retry_after) == (Verdict.RETRY, 429, 2.0)


def test_redirects_are_not_followed(server: Any) -> None:
    """A 307 to elsewhere is a refusal: the key is never replayed to another host."""
    server.script = [(307, {"Location": "http://127.0.0.2:1/steal"})]
    transport = transport_to(url_of(server))
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
    transport = transport_to(f"http://127.0.0.1:{port}", timeout=1.0)
    outcome = transport.send(b"{}", "b1")
    transport.close()
    assert outcome.verdict is Verdict.RETRY and outcome.status is None
    assert (outcome.detail, outcome.kind) == ("connection refused", FailureKind.CONNECTION_REFUSED)


def test_the_key_never_appears_in_reprs() -> None:
    """The bearer auth object hides the key."""
    transport = transport_to("https://example.com", key="very-secret")
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
        transport = transport_to(url_of(server))
        transport.send(b"{}", "b1")
        transport.close()
        assert len(exporter.get_finished_spans()) == 1
    finally:
        RequestsInstrumentor().uninstrument()
        provider.shutdown()


# -- an ingest that misbehaves, over real sockets -------------------------------------------


def send_in_thread(transport: IngestTransport, within: float = 60.0) -> Any:
    """``transport.send`` on a thread, so that a stall fails the test instead of hanging it."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(transport.send(b'{"events":[]}', "b1")))
    thread.start()
    thread.join(within)
    assert result, f"send() still running after {within} s: the request has no total deadline"
    return result[0]


def test_trickled_headers_become_a_timeout() -> None:
    """A reply whose headers trickle in a byte at a time ends at BEACON_TIMEOUT, as a retry."""
    with misbehaving(trickled_headers(interval=0.2)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.kind, outcome.status) == (Verdict.RETRY, FailureKind.TIMEOUT, None)
    assert outcome.detail == "timed out after 1 s"


def test_trickled_body_ends_at_the_deadline_with_the_status_it_had() -> None:
    """A 503 whose body trickles is cut at the deadline and retried as the 503 it is."""
    with misbehaving(trickled_body(503, interval=0.2)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        outcome = send_in_thread(transport)
        assert (outcome.verdict, outcome.status) == (Verdict.RETRY, 503)
        # The cut connection is not reused: the next request opens a new one.
        send_in_thread(transport)
        transport.close()
    assert ingest.connections == 2


def test_accepted_reply_with_a_trickled_body_is_accepted_in_bounded_time() -> None:
    """A 202 whose body never ends: the ingest said yes, so the batch is not resent."""
    with misbehaving(trickled_body(202, interval=0.2)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.status) == (Verdict.ACCEPTED, 202)


def test_a_huge_reply_is_not_read() -> None:
    """Of a 100 MB reply at most a few KB are read; the connection is closed, not drained."""
    size = 100 * 1024 * 1024
    with misbehaving(huge_body(500, size)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}")
        outcome = send_in_thread(transport)
        assert (outcome.verdict, outcome.status) == (Verdict.RETRY, 500)
        assert outcome.detail == f"HTTP 500 from 127.0.0.1:{ingest.port}: " + "x" * 199 + "…"
        send_in_thread(transport)
        transport.close()
        wait_until(lambda: ingest.connections == 2)
    # What the server got out before the client hung up: socket buffers, not the reply.
    assert ingest.written < size // 4


def test_small_replies_keep_the_connection_alive() -> None:
    """Fully read replies (2xx and errors alike) leave one keep-alive connection in use."""
    with misbehaving(answer(400, b'{"error": "bad batch"}')) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}")
        outcomes = [send_in_thread(transport) for _ in range(3)]
        transport.close()
    assert [o.status for o in outcomes] == [400, 400, 400]
    assert ingest.connections == 1


# -- reasons in words ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (401, b'{"error": "unknown ingest key"}',
         "HTTP 401 from {url}: unknown ingest key (check BEACON_INGEST_KEY)"),
        (404, b"<h1>Not Found</h1>", "HTTP 404 from {url}: <h1>Not Found</h1> (check BEACON_INGEST_URL)"),
        (404, b"no such\r\npath\x1b[31m", "HTTP 404 from {url}: no such path [31m (check BEACON_INGEST_URL)"),
        (400, b'{"detail": {"message": "events.0.ts: naive"}}', "HTTP 400 from {host}: events.0.ts: naive"),
        (403, b"key secret-key-1 revoked", "HTTP 403 from {url}: key *** revoked (check BEACON_INGEST_KEY)"),
        (503, b"", "HTTP 503 from {host}"),
    ],
)  # fmt: skip
def test_http_failures_quote_the_ingest_short_and_sanitised(status: int, body: bytes, detail: str) -> None:
    """The ingest's message, one line, no control characters, never the key; wrong key/path name the URL."""
    with misbehaving(answer(status, body)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}/v1/ingest?token=abc", key="secret-key-1")
        outcome = send_in_thread(transport)
        transport.close()
    host = f"127.0.0.1:{ingest.port}"
    assert outcome.detail == detail.format(url=f"http://{host}/v1/ingest", host=host)
    assert outcome.kind is FailureKind.HTTP and "abc" not in outcome.detail


def test_dns_failure_names_the_host() -> None:
    """A host that does not resolve is a retry that says so."""
    transport = transport_to("https://no-such-host.invalid:8443", timeout=2.0)
    outcome = send_in_thread(transport)
    transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.DNS)
    assert outcome.detail == "DNS lookup failed for no-such-host.invalid"


# -- TLS, CA settings and proxies ----------------------------------------------------------

INGEST_NAME = "ingest.beacon-test.invalid"
"""A name only the test proxy can resolve (.invalid never resolves, RFC 6761)."""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"), [INGEST_NAME, "localhost", "127.0.0.1"])


@pytest.fixture
def no_ca_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)


def test_trickled_tls_reply_becomes_a_timeout(
    certificate: Certificate, no_ca_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline ends a trickled reply over TLS too (it shuts the wrapped socket down)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    with misbehaving(trickled_headers(interval=0.2), tls=certificate.server_context()) as ingest:
        transport = transport_to(f"https://localhost:{ingest.port}", timeout=1.0)
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.TIMEOUT), outcome.detail
    assert str(outcome) == "retry: timed out after 1 s"


def test_tls_failure_says_why(certificate: Certificate, no_ca_settings: None) -> None:
    """An untrusted certificate is a retry worded "TLS: certificate verify failed: ..."."""
    with misbehaving(answer(202), tls=certificate.server_context()) as ingest:
        transport = transport_to(f"https://localhost:{ingest.port}")
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.TLS)
    assert outcome.detail.startswith("TLS: certificate verify failed: "), outcome.detail
    assert ingest.requests == []


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"])
def test_openssl_and_requests_ca_variables_are_honoured(
    variable: str, certificate: Certificate, no_ca_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private CA given as SSL_CERT_FILE, SSL_CERT_DIR or REQUESTS_CA_BUNDLE is trusted."""
    path = certificate.directory if variable == "SSL_CERT_DIR" else certificate.cert
    monkeypatch.setenv(variable, str(path))
    with misbehaving(answer(202), tls=certificate.server_context()) as ingest:
        transport = transport_to(f"https://localhost:{ingest.port}")
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.status) == (Verdict.ACCEPTED, 202), outcome.detail
    assert ingest.requests[0]["idempotency-key"] == "b1"


def test_through_an_https_proxy_the_proxy_resolves_the_ingest(
    certificate: Certificate, no_ca_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest name that only the proxy can resolve is reached through a CONNECT tunnel."""
    with misbehaving(answer(202), tls=certificate.server_context()) as ingest:
        proxy = ConnectProxy({INGEST_NAME: ("127.0.0.1", ingest.port)})
        try:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
            transport = transport_to(f"https://{INGEST_NAME}:{ingest.port}", key="key-7")
            outcome = send_in_thread(transport)
            transport.close()
        finally:
            proxy.close()
    assert (outcome.verdict, outcome.status) == (Verdict.ACCEPTED, 202), outcome.detail
    assert proxy.tunnels == [f"{INGEST_NAME}:{ingest.port}"]
    assert ingest.requests[0]["authorization"] == "Bearer key-7"


def test_no_proxy_is_honoured_and_plain_http_never_uses_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_PROXY exempts the ingest; a loopback http ingest is reached directly, proxy or not."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "ingest.example.com")
    assert transport_to("https://ingest.example.com")._new_session().proxies == {}
    assert (
        transport_to("https://other.example.com")._new_session().proxies["https"]
        == "http://proxy.example:3128"
    )
    assert transport_to("http://127.0.0.1:9")._new_session().proxies == {}


def test_a_refusing_proxy_is_named_as_such(no_ca_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that will not open the tunnel is a retry worded as a proxy failure."""
    proxy = ConnectProxy({})
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        transport = transport_to(f"https://{INGEST_NAME}")
        outcome = send_in_thread(transport)
        transport.close()
    finally:
        proxy.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.PROXY)
    assert "502" in outcome.detail, outcome.detail


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        (Outcome(Verdict.ACCEPTED, status=202), "accepted (HTTP 202)"),
        (Outcome(Verdict.RETRY, detail="connection refused"), "retry: connection refused"),
        (
            Outcome(Verdict.REJECTED, 401, detail="HTTP 401 from u: bad key"),
            "rejected: HTTP 401 from u: bad key",
        ),
    ],
)
def test_outcomes_read_as_words_in_logs(outcome: Outcome, text: str) -> None:
    """An outcome in a log line is its verdict and reason, not a dataclass repr."""
    assert str(outcome) == text


def test_a_dry_run_keeps_only_the_newest_events_and_counts_the_rest() -> None:
    """A dry run left on in a long-running server is bounded: oldest batches go, counted."""
    sink = InMemoryTransport(keep=10)
    for first in range(0, 30, 4):  # 8 batches of 4 events: 32 in all
        events = [{"n": n} for n in range(first, first + 4)]
        assert sink.send(json.dumps({"events": events}).encode(), f"b{first}").verdict is Verdict.ACCEPTED
    # Whole batches go: 12 kept would be over 10, so the batch 20-23 went too.
    assert [event["n"] for event in sink.events()] == list(range(24, 32))
    assert sink.forgotten == 24
    sink.clear()
    assert sink.events() == []
