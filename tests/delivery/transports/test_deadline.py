"""The request deadline's watchdog: one per transport, and the bound it keeps across forks and gevent.

The trickled-reply tests in ``test_http.py`` check the bound itself; these check what one
long-lived watchdog (instead of a timer per request) must still honour.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.delivery.transports import deadline as deadline_module
from beacon_otel.delivery.transports.http import FailureKind, Verdict
from tests.delivery.transports.test_http import send_in_thread, transport_to
from tests.support.misbehaving import Misbehaving, answer, misbehaving, trickled_headers
from tests.support.waiting import wait_until

CHILD = Path(__file__).parents[2] / "apps" / "deadline_child.py"


def first_answered_then_trickled(conn: socket.socket, server: Misbehaving) -> None:
    """The first request is answered at once (202); every later reply trickles its headers."""
    (answer(202) if len(server.requests) == 1 else trickled_headers(interval=0.2))(conn, server)


def test_one_watchdog_thread_bounds_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty POSTs start one thread (the watchdog), not one each; a trickled 21st still times out."""
    started: list[str] = []
    start, sender = threading.Thread.start, threading.current_thread()

    def counting_start(thread: threading.Thread) -> None:
        if threading.current_thread() is sender:  # not the test ingest's own threads
            started.append(thread.name)
        start(thread)

    with misbehaving(answer(202)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        monkeypatch.setattr(threading.Thread, "start", counting_start)
        outcomes = [transport.send(b'{"events":[]}', f"b{n}") for n in range(20)]
        monkeypatch.undo()
    assert [o.status for o in outcomes] == [202] * 20
    assert started == ["beacon-otel-request-deadline"]
    with misbehaving(trickled_headers(interval=0.2)) as ingest:
        slow = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        outcome = send_in_thread(slow)
        slow.close()
    transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.TIMEOUT)


def test_a_watchdog_ended_after_a_quiet_spell_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a quiet spell the watchdog's thread ends; the next request makes another and is bounded."""
    monkeypatch.setattr(deadline_module, "LINGER", 0.05)
    with misbehaving(first_answered_then_trickled) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        assert send_in_thread(transport).status == 202
        first_watchdog = transport._deadline._watchdog
        assert first_watchdog is not None
        first_watchdog.join(30)
        assert not first_watchdog.is_alive()
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.TIMEOUT)
    assert outcome.detail == "timed out after 1 s"


def test_a_watchdog_that_could_not_start_is_tried_again_by_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request whose watchdog thread could not start fails (as an internal error upstream); the
    next request starts one, and its trickled reply is cut at the deadline."""

    def no_thread(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with misbehaving(first_answered_then_trickled) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}", timeout=1.0)
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(RuntimeError):
            transport.send(b'{"events":[]}', "b1")
        monkeypatch.undo()
        assert send_in_thread(transport).status == 202
        outcome = send_in_thread(transport)
        transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, FailureKind.TIMEOUT)


def test_closing_the_transport_ends_its_watchdog() -> None:
    """A closed transport leaves no thread behind; sending again makes a new watchdog."""
    with misbehaving(answer(202)) as ingest:
        transport = transport_to(f"http://127.0.0.1:{ingest.port}")
        assert transport.send(b'{"events":[]}', "b1").status == 202
        watchdog = transport._deadline._watchdog
        assert watchdog is not None
        transport.close()
        watchdog.join(30)
        assert not watchdog.is_alive()
        assert transport.send(b'{"events":[]}', "b2").status == 202
        wait_until(lambda: transport._deadline._watchdog is not None)
        transport.close()


def run_child(mode: str, url: str) -> list[dict[str, Any]]:
    """``tests/apps/deadline_child.py`` in its own process; a request left unbounded fails here."""
    result = subprocess.run(
        [sys.executable, str(CHILD), mode, url], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_the_bound_holds_in_a_forked_child_and_in_its_parent() -> None:
    """Forked with the watchdog running (gunicorn's preload), child and parent each time out."""
    with misbehaving(first_answered_then_trickled) as ingest:
        outcomes = run_child("fork", f"http://127.0.0.1:{ingest.port}/v1/ingest")
    assert outcomes == [
        {"verdict": "RETRY", "kind": "TIMEOUT", "process": "child"},
        {"verdict": "RETRY", "kind": "TIMEOUT", "process": "parent"},
    ]


@pytest.mark.parametrize("mode", ["gevent", "gevent-after-fork"])
def test_the_bound_holds_under_gevent_without_blocking_the_hub(mode: str) -> None:
    """Under gevent (patched first, or in a forked child as gunicorn's gevent worker does after
    ``--preload``) a trickled reply times out, and other greenlets run while the request waits."""
    pytest.importorskip("gevent")
    with misbehaving(first_answered_then_trickled) as ingest:
        (outcome,) = run_child(mode, f"http://127.0.0.1:{ingest.port}/v1/ingest")
    assert (outcome["verdict"], outcome["kind"]) == ("RETRY", "TIMEOUT")
    assert outcome["ticks"] > 0
