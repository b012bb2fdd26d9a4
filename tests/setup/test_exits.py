"""Delivery however the process ends: Beacon's SIGTERM handler, chained, and the exit paths.

The servers themselves are exercised in tests/integration/test_servers.py; these pin down the
handler's choices in-process, with ``signal.raise_signal`` replaced so the test process lives.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, configure
from beacon_otel.setup import exits

SERVER_SPAN = {"http.method": "GET", "http.target": "/x", "http.route": "/x", "http.status_code": 200}


@pytest.fixture(autouse=True)
def sigterm_restored() -> Iterator[None]:
    """Each test starts from the default SIGTERM action and leaves the process as it was."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)
    exits.deliver_now()  # nothing left buffered for the test process's own exit to print
    exits._registered.clear()
    exits._signalled = False
    exits._finalizer_pid = 0


@pytest.fixture
def raised(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Signals re-raised by the handler, instead of ending the test process."""
    calls: list[int] = []
    monkeypatch.setattr(exits.signal, "raise_signal", calls.append)
    return calls


def serve_one(provider: TracerProvider) -> None:
    provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER, attributes=SERVER_SPAN).end()


def configured() -> tuple[TracerProvider, Any]:
    provider = TracerProvider(shutdown_on_exit=False)
    processor = configure(BeaconConfig(dry_run=True, flush_interval=60), tracer_provider=provider)
    serve_one(provider)
    assert processor.buffered() == 1
    return provider, processor


def test_sigterm_over_the_default_delivers_then_ends_with_the_default(raised: list[int]) -> None:
    """configure() alone: SIGTERM delivers what is buffered, then ends as the default action would."""
    _, processor = configured()
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)
    assert len(processor.dry_run_events()) == 1
    assert raised == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_chains_the_handler_in_force_and_leaves_the_exit_to_it(raised: list[int]) -> None:
    """An app's or server's handler still runs; delivery waits for its exit (requests in flight)."""
    seen: list[int] = []

    def apps_own(signum: int, frame: Any) -> None:
        seen.append(signum)

    signal.signal(signal.SIGTERM, apps_own)
    _, processor = configured()
    handler = signal.getsignal(signal.SIGTERM)
    assert handler is not apps_own
    assert callable(handler)
    handler(signal.SIGTERM, None)
    assert seen == [signal.SIGTERM]
    assert raised == []
    assert processor.buffered() == 1  # delivered at the exit the app's handler leads to
    assert exits._signalled


def test_an_ignored_sigterm_stays_ignored() -> None:
    """SIGTERM ignored on purpose is left so."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configured()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_one_handler_however_many_processors(raised: list[int]) -> None:
    """Two configure() calls: one handler, and SIGTERM delivers both processors' events."""
    _, first = configured()
    handler = signal.getsignal(signal.SIGTERM)
    _, second = configured()
    assert signal.getsignal(signal.SIGTERM) is handler
    assert callable(handler)
    handler(signal.SIGTERM, None)
    assert len(first.dry_run_events()) == len(second.dry_run_events()) == 1


def test_multiprocessing_finalizers_deliver(raised: list[int]) -> None:
    """The finalizer multiprocessing runs where atexit does not (its workers' os._exit) delivers."""
    import multiprocessing.util

    _, processor = configured()
    ours = [
        f for f in list(multiprocessing.util._finalizer_registry.values()) if f._callback is exits.deliver_now
    ]
    assert ours
    ours[-1]()  # what multiprocessing's exit function runs as a child process ends
    assert len(processor.dry_run_events()) == 1


@pytest.mark.parametrize(
    ("options", "says"),
    [({}, "add --die-on-term"), ({b"die-on-term": True}, "set BEACON_FLUSH_INTERVAL=1")],
)
def test_under_uwsgi_one_warning_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, options: dict[Any, Any], says: str
) -> None:
    """uWSGI can end workers without exit handlers: setting up Beacon there warns once, with the fix."""
    import types

    fake = types.ModuleType("uwsgi")
    fake.opt = options  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "uwsgi", fake)
    monkeypatch.setattr(exits, "_warned", set())
    for _ in range(2):
        exits.warn_where_exit_cannot_be_followed()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert says in warnings[0] and "docs/servers.md" in warnings[0]


def test_no_warning_on_servers_beacon_follows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside uWSGI and eventlet's patching, nothing is said."""
    monkeypatch.delitem(__import__("sys").modules, "uwsgi", raising=False)
    monkeypatch.setattr(exits, "_warned", set())
    exits.warn_where_exit_cannot_be_followed()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


FORK_HOOKS_PROBE = """
import multiprocessing.util, json
before = len(multiprocessing.util._afterfork_registry)
import beacon_otel
from beacon_otel.setup import exits
imported = len(multiprocessing.util._afterfork_registry) - before
from beacon_otel import BeaconConfig, BeaconSpanProcessor
for _ in range(2):
    exits.flush_at_exit(BeaconSpanProcessor(BeaconConfig(ingest_key="k", dry_run=True)))
print(json.dumps([imported, len(multiprocessing.util._afterfork_registry) - before]))
"""


def test_fork_hooks_are_registered_when_beacon_delivers_not_at_import() -> None:
    """Importing Beacon adds no fork hooks; the first processor that delivers adds them, once."""
    out = subprocess.run(
        [sys.executable, "-c", FORK_HOOKS_PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert json.loads(out.splitlines()[-1]) == [0, 1]
