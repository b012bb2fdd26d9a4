"""What cannot be delivered yet waits on disk, per destination, in files several processes share safely.

Each destination (ingest URL and key) has its own directory under the spool root, named by a
fingerprint that does not reveal the key (:func:`destination_fingerprint`); a process only ever
replays batches from its own, so one project's events never reach another project's ingest. Other
destinations' batches are touched only by retention (:mod:`beacon_otel.spool.retention`), which logs
what it removes. The file names and format are in :mod:`beacon_otel.spool.files`; only names this
code generates are ever removed. The directory itself, its permissions, size and disk errors, is
:mod:`beacon_otel.spool.directory`'s.

A batch is written to a temporary file, fsynced and renamed into place, so a reader never sees half
of one; it is leased by renaming it, which only one process can win. Delivery is at least once: a
lease whose holder is gone, or that is older than the lease timeout, goes back to the queue even if
its holder was only slow. Processes sharing a directory must see each other's pids (one host or
container): across pid namespaces a live holder can look dead, which costs a duplicate (sent with the
same Idempotency-Key, so the ingest can discard it), never a lost batch.

A disk error never turns the spool off for good: writes fail fast for ``retry_after`` seconds, then
the disk is tried again; :attr:`Spool.problem` says why meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from beacon_otel.spool import files
from beacon_otel.spool.directory import SpoolDirectory
from beacon_otel.spool.files import DestinationState, destination_fingerprint, destinations
from beacon_otel.spool.retention import Removals, Retention, unlink

__all__ = [
    "DestinationState",
    "Spool",
    "SpoolStats",
    "SpooledBatch",
    "destination_fingerprint",
    "destinations",
]

logger = logging.getLogger("beacon_otel")

# Process-wide, so that two Spool objects on one directory in one process never pick the same name.
_sequence = itertools.count()
# Paths of the leases this process holds. A lease carrying our pid that is not in here was left by an
# earlier process with the same pid (containers restart with the same pids), so it is reclaimed.
_held: set[str] = set()


@dataclass(slots=True)
class SpoolStats:
    """Batches (not events) by outcome in this process; a write counts once: stored, full or failed."""

    written: int = 0
    recovered: int = 0
    corrupt_removed: int = 0
    expired_removed: int = 0
    write_failures: int = 0
    refused_full: int = 0
    partial_removed: int = 0
    quarantined: int = 0


class SpooledBatch:
    """One batch leased from the spool: ack it once it is settled, release it to retry it later."""

    __slots__ = ("_done", "_leases", "_name", "_size", "batch_id", "body", "events", "path")

    def __init__(
        self, leases: Leases, name: str, path: Path, data: tuple[bytes, int, str], size: int
    ) -> None:
        self._leases = leases
        self._name = name
        self._size = size
        self._done = False
        self.path = path
        self.body, self.events, self.batch_id = data

    def ack(self) -> None:
        """Delivered or permanently refused: delete the leased file."""
        if not self._done:
            self._done = True
            self._leases.delete(self.path, self._size)

    def release(self) -> None:
        """Not delivered: give the lease back so the batch is retried later, in its place in the order."""
        if not self._done:
            self._done = True
            self._leases.give_back(self.path, self._name)


Lost = Callable[[str, int], None]
"""Told of events the spool will never send: the reason, and how many (0 when unknown)."""


class Leases:
    """Batches of one directory leased by renaming, which only one process can win."""

    def __init__(self, disk: SpoolDirectory, stats: SpoolStats, lost: Lost) -> None:
        self._disk = disk
        self._directory = disk.path
        self._stats = stats
        self._lost = lost

    def take(self, name: str, now_ns: int) -> SpooledBatch | None:
        """Lease and read one batch; None when another process got it first or it was corrupt."""
        lease = self._directory / f"{name}{files.LEASE_MARK}{os.getpid()}-{now_ns}"
        # Marked held before the rename, so another Spool in this process never takes it for orphaned.
        _held.add(str(lease))
        try:
            os.rename(self._directory / name, lease)
        except OSError:
            _held.discard(str(lease))
            return None  # leased by another process first
        try:
            data = files.read_regular(lease)
        except files.NotABatch as exc:
            self.quarantine(lease, name, exc.reason, events=0)
            return None
        except OSError:
            self.give_back(lease, name)
            return None  # unreadable for now: left for a later claim, or for retention
        decoded = files.decode(data)
        if decoded is not None and (problem := files.events_problem(decoded[0], decoded[1])):
            # Its checksum holds, so it was written to look like ours: never sent, never split.
            self.quarantine(lease, name, problem, events=decoded[1])
            return None
        if decoded is None:
            self._stats.corrupt_removed += 1
            _held.discard(str(lease))
            unlink(lease)
            self._disk.measure_again()
            removals = Removals()
            removals.add("corrupt", name)
            removals.log(self._directory)
            return None
        return SpooledBatch(self, name, lease, decoded, len(data))

    def quarantine(self, lease: Path, name: str, reason: str, *, events: int) -> None:
        """Set aside a file that is not a batch, under a name no listing takes: counted, logged, kept."""
        target = self._directory / f"{files.QUARANTINE_PREFIX}{name}"
        try:
            os.rename(lease, target)
        except OSError:
            unlink(lease)  # it must not be claimed again and again
        _held.discard(str(lease))
        self._stats.quarantined += 1
        self._disk.measure_again()
        self._lost("spool_quarantined", events)
        logger.warning(
            "beacon-otel: spool file %s is not a batch (%s): set aside as %s, never sent",
            self._directory / name,
            reason,
            target.name,
        )

    def delete(self, lease: Path, size: int) -> None:
        """A leased batch is settled: count it recovered, then remove its file."""
        self._stats.recovered += 1  # before the file goes, so an empty spool shows it
        if unlink(lease):
            self._disk.size = max(self._disk.size - size, 0)
        # else: reclaimed by another process as stale; delivery is at least once
        _held.discard(str(lease))

    def give_back(self, lease: Path, name: str) -> None:
        """Rename a leased batch back, in its place in the order."""
        # On failure it was reclaimed already; or, if still here, our next claim takes it for orphaned.
        with contextlib.suppress(OSError):
            os.rename(lease, self._directory / name)
        _held.discard(str(lease))


class Spool:
    """Undeliverable batches of one destination on disk, shared safely by several processes.

    Meant for one thread per process; no public method raises. ``max_bytes=0`` turns it off.
    """

    def __init__(
        self,
        root: Path,
        *,
        destination: str,
        max_bytes: int,
        retention: float = 48 * 3600,
        clock: Callable[[], float] = time.time,
        lease_timeout: float = 300.0,
        retry_after: float = 5.0,
        lost: Lost = lambda reason, events: None,
        earlier: tuple[str, ...] = (),
    ) -> None:
        """``earlier``: directories this destination had under earlier versions, adopted at start."""
        self.root = Path(root)
        self._disk = SpoolDirectory(self.root, destination, retry_after=retry_after, clock=clock)
        self.directory = self._disk.path
        self.stats = SpoolStats()
        self._max_bytes = max_bytes
        self._leases = Leases(self._disk, self.stats, lost)
        self._retention = Retention(
            self.directory, retention=retention, lease_timeout=lease_timeout, held=_held, lost=lost
        )
        self._clock = clock
        self._last_ns = 0
        if max_bytes <= 0:
            self._disk.refused = True
            return
        if files.FINGERPRINT.fullmatch(destination) is None:
            self._disk.refused = True
            logger.warning("beacon-otel: spool disabled: %r is not a destination fingerprint", destination)
            return
        self._disk.prepare(at_start=True)
        self._disk.report_legacy()
        self._adopt(earlier)
        self._list(self._now_ns())
        self._report_others()  # after the first listing's retention: what is left waits

    def _adopt(self, earlier: tuple[str, ...]) -> None:
        """Move this destination's batches from the directories earlier versions named differently."""
        for name in earlier:
            if files.FINGERPRINT.fullmatch(name) is None or name == self.directory.name:
                continue
            old = self.root / name
            try:
                with os.scandir(old) as entries:
                    batches = [e.name for e in entries if files.BATCH_NAME.fullmatch(e.name)]
            except OSError:
                continue
            moved = sum(1 for batch in batches if _moved(old / batch, self.directory / batch))
            if moved:
                self._disk.measure_again()
                logger.info("beacon-otel: spool: %d batches of this ingest and key moved from %s", moved, old)

    def _report_others(self) -> None:
        """One WARNING when other destinations' batches wait here: they are never sent from here."""
        others = [
            state
            for state in destinations(self.root)
            if state.batches and state.fingerprint != self.directory.name
        ]
        if not others:
            return
        batches = sum(state.batches for state in others)
        events = sum(state.events for state in others)
        logger.warning(
            "beacon-otel: the spool at %s holds %d events in %d batches for %d other ingest URL or key "
            "(%s), not sent from here; to send them with the key they were made for, run "
            "'beacon-otel spool-deliver' with that BEACON_INGEST_KEY and BEACON_INGEST_URL "
            "(retention removes them 48 h after they were first seen)",
            self.root,
            events,
            batches,
            len(others),
            ", ".join(state.fingerprint for state in others),
        )

    @property
    def enabled(self) -> bool:
        """Whether a write may be tried now: configured, not refused, and not pausing after a disk error."""
        return not self._disk.refused and not self._disk.pausing()

    @property
    def problem(self) -> str | None:
        """Why the last write failed, in words; None once a write succeeds again."""
        return self._disk.problem

    def write(self, body: bytes, events: int, batch_id: str | None = None) -> bool:
        """Store one encoded batch with its Idempotency-Key; False when it was not stored."""
        disk = self._disk
        if disk.refused or disk.pausing() or not (disk.usable or disk.prepare()):
            self.stats.write_failures += 1
            return False
        if batch_id is None:
            batch_id = uuid.uuid4().hex
        if files.BATCH_ID.fullmatch(batch_id) is None:
            self.stats.write_failures += 1
            logger.warning("beacon-otel: spool cannot store batch id %r (visible ASCII only)", batch_id[:40])
            return False
        record = files.encode(body, events, batch_id)
        used = disk.measured_size()
        if used + len(record) > self._max_bytes:
            # The newest batch is the one refused: one comparison, and no deletes racing other
            # processes' claims, which evicting the oldest would need.
            self.stats.refused_full += 1
            disk.failed(f"spool full ({used} of {self._max_bytes} bytes) at {self.directory}", pause=False)
            return False
        pid = os.getpid()
        now_ns = self._now_ns()
        name = f"{files.BATCH_PREFIX}{now_ns:020d}-{pid}-{next(_sequence):06d}-{secrets.token_hex(4)}"
        try:
            disk.write_atomically(self.directory / f"{name}{files.BATCH_SUFFIX}", record)
        except OSError as exc:
            self.stats.write_failures += 1
            disk.usable = False  # proven again before the next write: the directory may be gone
            disk.failed(_write_problem(self.directory, exc), pause=True)
            return False
        disk.size += len(record)
        self._retention.written(f"{name}{files.BATCH_SUFFIX}", now_ns)
        self.stats.written += 1
        disk.problem = None
        return True

    def claim(self) -> SpooledBatch | None:
        """Lease the oldest batch of this destination nobody holds, or None when there is none."""
        if self._disk.refused:
            return None
        now_ns = self._now_ns()
        for name in self._list(now_ns):
            batch = self._leases.take(name, now_ns)
            if batch is not None:
                return batch
        return None

    def pending(self) -> int:
        """Batches waiting to be claimed (leased ones excluded)."""
        if self._disk.refused:
            return 0
        try:
            with os.scandir(self.directory) as entries:
                return sum(1 for e in entries if files.BATCH_NAME.fullmatch(e.name))
        except OSError:
            return 0

    def size_bytes(self) -> int:
        """Bytes this destination's batches take, measured at most every few seconds."""
        return 0 if self._disk.refused else self._disk.measured_size()

    def _now_ns(self) -> int:
        # Strictly increasing, so this spool's own batches keep their order when the clock stalls.
        self._last_ns = max(int(self._clock() * files.NS), self._last_ns + 1)
        return self._last_ns

    def _list(self, now_ns: int) -> list[str]:
        """The waiting batches oldest first, after retention has tidied the directory."""
        listing = self._retention.list(now_ns)
        self.stats.partial_removed += listing.partial_removed
        if listing.expired_removed:
            self.stats.expired_removed += listing.expired_removed
            self._disk.measure_again()
        return listing.waiting


def _moved(source: Path, target: Path) -> bool:
    try:
        os.rename(source, target)
    except OSError:
        return False  # claimed by a process of the earlier version meanwhile
    return True


def _write_problem(directory: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # The disk (or the user's quota) is full, not the spool's own bound: said in the same words.
        return f"spool full (no space left on the device) at {directory}"
    return f"cannot write to {directory}: {files.describe(exc)}"
