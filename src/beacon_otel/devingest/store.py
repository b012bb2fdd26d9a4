"""The dev ingest's SQLite store: accepted events, and each batch's Idempotency-Key once.

Not thread-safe on its own: DevIngest serialises every call under its lock. The file holds
consumers as sent (often raw API keys): it is created, or narrowed, to 0600.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

EVENT_KEYS = ("ts", "method", "route", "path", "status", "duration_ms", "consumer", "error")
_COLUMNS = (*EVENT_KEYS, "validation_errors")
_SELECT_EVENTS = f"SELECT {', '.join(_COLUMNS)} FROM events"
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(_COLUMNS)}, batch_id, received_at)"
    f" VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})"
)
# `batches` came after `events`: IF NOT EXISTS lets a --db file from an older version open.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT NOT NULL, received_at TEXT NOT NULL,
    ts TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL,
    status INTEGER NOT NULL, duration_ms INTEGER NOT NULL, consumer TEXT, error TEXT,
    validation_errors TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    idempotency_key TEXT PRIMARY KEY, digest TEXT NOT NULL, events INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
"""


_GENERATIONS = itertools.count(1)


class KeyReused(Exception):
    """An Idempotency-Key already stored for a batch with different events."""


@dataclass(frozen=True)
class Stored:
    """What storing one batch did: how many events it holds, and whether it was a repeat."""

    events: int
    repeat: bool


class EventStore:
    """Accepted events in SQLite (a file keeps them across runs, or ``:memory:``)."""

    def __init__(self, path: str) -> None:
        if path not in ("", ":memory:"):
            _owner_only(path)
        self._db = sqlite3.connect(path, check_same_thread=False)
        try:
            self._db.executescript(_SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except BaseException:
            self._db.close()
            raise
        self.generation = next(_GENERATIONS)
        """New for each store and at each clear(): what was read before no longer describes it."""

    def close(self) -> None:
        self._db.close()

    def store_batch(self, events: list[dict[str, Any]], key: str | None, received_at: str) -> Stored:
        """Store a batch whole, or nothing if its key was stored before (a resend).

        Raises:
            KeyReused: the key was stored before with other events, a client bug that an
                ingest honouring the key would turn into lost data.
        """
        digest = _digest(events)
        with self._db:  # one transaction: a batch and its key are stored together or not at all
            if key is not None:
                row = self._db.execute(
                    "SELECT digest, events FROM batches WHERE idempotency_key = ?", (key,)
                ).fetchone()
                if row is not None:
                    if row[0] != digest:
                        raise KeyReused(f"Idempotency-Key {key!r} was used before for other events")
                    return Stored(int(row[1]), repeat=True)
                self._db.execute(
                    "INSERT INTO batches VALUES (?, ?, ?, ?)", (key, digest, len(events), received_at)
                )
            batch_id = key or uuid.uuid4().hex  # what tells the events of one batch apart
            rows = [(*_columns(e), batch_id, received_at) for e in events]
            self._db.executemany(_INSERT_EVENT, rows)
        self._count += len(rows)
        return Stored(len(rows), repeat=False)

    def events(self, *, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored events, oldest first, from the ``offset``-th; with ``limit``, the newest ``limit``."""
        if limit is None:
            rows = self._db.execute(_SELECT_EVENTS + " ORDER BY id LIMIT -1 OFFSET ?", (offset,)).fetchall()
        else:
            rows = self._db.execute(_SELECT_EVENTS + " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            rows.reverse()
        found = []
        for row in rows:
            event = dict(zip(EVENT_KEYS, row[: len(EVENT_KEYS)], strict=True))
            if row[len(EVENT_KEYS)] is not None:
                event["validation_errors"] = json.loads(row[len(EVENT_KEYS)])
            found.append(event)
        return found

    def rows_after(
        self,
        columns: str,
        after: int,
        limit: int,
        *,
        consumer: str | None = None,
        status_class: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """``id`` and ``columns`` (a fixed, comma-separated list) of the events stored after
        event ``after``, oldest first, ``limit`` at most: one consumer ("-" for none) and one
        status class (4 for 4xx) only, when given."""
        where, args = "id > ?", list[object]([after])
        if consumer is not None:
            where, args = where + " AND COALESCE(consumer, '-') = ?", [*args, consumer]
        if status_class is not None:
            where, args = where + " AND status / 100 = ?", [*args, status_class]
        query = f"SELECT id, {columns} FROM events WHERE {where} ORDER BY id LIMIT ?"
        return self._db.execute(query, [*args, limit]).fetchall()

    def count(self) -> int:
        """How many events are stored (kept in memory: COUNT(*) reads the whole table)."""
        return self._count

    def clear(self) -> None:
        """Forget every event and every batch key."""
        with self._db:
            self._db.execute("DELETE FROM events")
            self._db.execute("DELETE FROM batches")
        self._count = 0
        self.generation = next(_GENERATIONS)


def _owner_only(path: str) -> None:
    """Create the database file readable by its owner only, or narrow an older one to that."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # SQLite's journals take its mode
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def _digest(events: list[dict[str, Any]]) -> str:
    """The same for the same events however they were encoded (key order, gzip, spacing)."""
    return hashlib.sha256(json.dumps(events, sort_keys=True).encode()).hexdigest()


def _columns(event: dict[str, Any]) -> tuple[Any, ...]:
    errors = event.get("validation_errors")
    return (*(event[k] for k in EVENT_KEYS), None if errors is None else json.dumps(errors))
