"""A real app under opentelemetry-instrument, its ingest behind a front that trickles replies.

The front accepts the app's connections; while it trickles it answers each request with a
status line and then a header one byte at a time, for as long as the client stays; afterwards it
passes connections through to the strict dev ingest. Every request hits ``/items/{n}``, so each
served number must arrive exactly once once the trickling stops.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from tests.support.misbehaving import LoopbackListener, pipe

from .conftest import Launch
from .faults_support import Load, beacon_env, item_numbers, stats_when_idle, summary, tally, wait_until

pytestmark = pytest.mark.integration

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "load_fastapi:app"]


class TricklingFront:
    """Trickles every reply while ``trickling`` is set; otherwise a pass-through to ``upstream``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.trickling = threading.Event()
        self.trickled = 0
        self._stopping = threading.Event()
        self._listener = LoopbackListener(self._serve, self._stopping)
        self.port = self._listener.port

    def close(self) -> None:
        self._listener.close()

    def _serve(self, conn: socket.socket) -> None:
        # Decided per connection, as it is accepted.
        (self._trickle if self.trickling.is_set() else self._pass)(conn)

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                reader = conn.makefile("rb")
                while True:  # every request on this connection, until the client gives up
                    length = 0
                    while (line := reader.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    if not line:
                        return
                    reader.read(length)
                    self.trickled += 1
                    conn.sendall(b"HTTP/1.1 202 Accepted\r\nX-Slow: ")
                    while not self._stopping.wait(1.0):
                        conn.sendall(b"a")
            except OSError:
                return

    def _pass(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as upstream:
            pipe(conn, upstream, self._stopping)


@pytest.fixture
def front(ingest: DevIngest) -> Iterator[TricklingFront]:
    server = TricklingFront(ingest.port)
    yield server
    server.close()


def test_trickled_replies_time_out_and_delivery_carries_on(
    launch: Launch, ingest: DevIngest, front: TricklingFront, tmp_path: Path
) -> None:
    """10 s of replies trickled a byte a second: each POST ends at BEACON_TIMEOUT, then all arrive once."""
    front.trickling.set()
    env = beacon_env(
        f"http://127.0.0.1:{front.port}",
        tmp_path / "spool",
        BEACON_TIMEOUT="2",
        BEACON_BATCH_SIZE="50",
        BEACON_FLUSH_INTERVAL="0.5",
    )
    server = launch(UVICORN, env)
    load = Load(server.port, rate=50, threads=2).start()
    wait_until(lambda: front.trickled >= 1, 30, "a first POST to the trickling front")
    trickle_started = time.monotonic()
    wait_until(lambda: time.monotonic() - trickle_started >= 10, 30, "10 s of trickling")
    front.trickling.clear()
    recovered_at = time.monotonic()
    load.stop()
    served = load.ok()
    wait_until(lambda: set(item_numbers(ingest.events())) >= served, 60, "every served request at the ingest")
    caught_up_s = time.monotonic() - recovered_at
    stats = stats_when_idle(server.port)["delivery"]
    result = tally(served, item_numbers(ingest.events()), load.attempted)
    summary(
        "trickled-replies",
        served=result.served,
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        trickled_posts=front.trickled,
        caught_up_s=f"{caught_up_s:.1f}",
        retried=stats["retried"],
        spooled=stats["spooled"],
        dropped=stats["dropped"],
    )
    # Several POSTs were cut at the deadline (the first one would have stalled for good).
    assert front.trickled >= 2, front.trickled
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert stats["dropped"] == {}, stats
    log = server.log()
    assert "ingest-key" not in log
