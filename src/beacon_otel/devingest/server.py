"""DevIngest: the dev ingest's lifecycle, stored events and the state tests inspect.

It owns the SQLite store of accepted events, the HTTP server (httpd.py) and the running
summaries (summaries.py), and answers each ingest POST through its
:class:`~beacon_otel.devingest.reception.Reception`, which keeps the counters, rejections,
arrivals and fault script.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from beacon_otel.devingest.access import is_loopback
from beacon_otel.devingest.faults import Fault
from beacon_otel.devingest.httpd import INGEST_PATH, _Server
from beacon_otel.devingest.reception import Reception, Reply
from beacon_otel.devingest.store import EventStore
from beacon_otel.devingest.summaries import Summaries
from beacon_otel.devingest.summary import Filters, View

__all__ = ["DevIngest", "IngestTimeout", "Reply"]


class IngestTimeout(AssertionError, TimeoutError):
    """The events a test waited for did not arrive in time."""


class DevIngest:
    """A strict Beacon ingest on a local socket that stores accepted events in SQLite."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str = ":memory:",
        ingest_key: str | None = None,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not is_loopback(host) and not ingest_key:
            raise ValueError(
                f"Expected an ingest key (--key) to listen on {host!r}, beyond loopback: anyone who "
                "can reach it could read stored consumers and reset it"
            )
        self.host, self.port, self.db_path, self.ingest_key = host, port, db_path, ingest_key
        # One lock guards the database, counters, faults and arrivals; the condition
        # wakes wait_for_events() whenever events are stored.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._store: EventStore | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reception = Reception(
            self._changed, self._require_store, ingest_key, log=log, stopping=self._stopping
        )
        """Answers each ingest POST for the HTTP layer, and keeps what happened to each."""
        self._summaries = Summaries(self._require_store, self._lock)

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. http://127.0.0.1:8390."""
        if self.port == 0:
            raise RuntimeError("DevIngest has no port yet: call start() first")
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    @property
    def beyond_loopback(self) -> bool:
        """Whether others can reach it: then reads, faults and resets need the ingest key too."""
        return not is_loopback(self.host)

    @property
    def url(self) -> str:
        """The full ingest endpoint, e.g. http://127.0.0.1:8390/v1/ingest."""
        return self.base_url + INGEST_PATH

    def start(self) -> DevIngest:
        """Bind, then serve on a daemon thread; a restart after stop() reuses the port."""
        if self._server is not None:
            raise RuntimeError("DevIngest is already running")
        store = EventStore(self.db_path)
        try:
            server = _Server((self.host, self.port), self)
        except BaseException:
            store.close()
            raise
        self._store, self._server, self.port = store, server, server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every connection and handler thread, and close the database."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the handler threads, so none touches the closed db
        thread.join()
        with self._lock:
            self._require_store().close()
            self._store = None

    def __enter__(self) -> DevIngest:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, faults: Iterable[Fault]) -> None:
        """Replace the fault script: each ingest POST consumes the next fault, then normal."""
        self.reception.script(faults)

    @property
    def faults(self) -> list[Fault]:
        """The scripted faults not consumed yet."""
        return self.reception.faults()

    def arrivals(self) -> list[dict[str, Any]]:
        """Every ingest POST so far: arrival times (monotonic and wall clock) and outcome."""
        return self.reception.arrivals()

    def events(self, *, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The stored events, oldest first, as the client sent them.

        Args:
            offset: skip the first ``offset`` stored events (``beacon-otel tail`` asks for
                what is new since its last poll).
            limit: only the newest ``limit`` events.
        """
        with self._lock:
            return self._require_store().events(offset=offset, limit=limit)

    def stats(self) -> dict[str, Any]:
        """Counters, stored event count, pending faults and every rejection with its problems."""
        with self._lock:
            return {
                **self.reception.counters,
                "events_stored": self._require_store().count(),
                "faults_pending": len(self.reception.faults()),
                "rejections": self.reception.rejections(),
            }

    def summary(self, filters: Filters | None = None, view: View | None = None) -> dict[str, Any]:
        """Per route figures, status mix, errors, validation fields, consumers and charts' data."""
        return self._summaries.summary(filters or Filters(), view)

    def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least n events are stored and return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (count := self._require_store().count()) < n:
                if (remaining := deadline - time.monotonic()) <= 0:
                    raise IngestTimeout(
                        f"expected at least {n} events within {timeout}s, got {count}; "
                        f"counters: {self.reception.counters}; "
                        f"rejections: {self.reception.rejections()[-3:]}"
                    )
                self._changed.wait(remaining)
        return self.events()

    def reset(self) -> None:
        """Forget stored events, counters, rejections, arrivals and scripted faults."""
        with self._changed:
            self._require_store().clear()
            self.reception.forget()
            self._changed.notify_all()

    # -- for the HTTP layer ---------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True from the moment stop() begins: no new answer should start."""
        return self._stopping.is_set()

    def _require_store(self) -> EventStore:
        if self._store is None:
            raise RuntimeError("DevIngest is not running: call start() first")
        return self._store
