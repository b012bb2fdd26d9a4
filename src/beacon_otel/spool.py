"""What cannot be delivered yet waits on disk, per destination, in files several processes share safely.

Each destination (ingest URL and key) has its own directory under the spool root, named by a
fingerprint that does not reveal the key (:func:`destination_fingerprint`); a process only ever
replays batches from its own, so one project's events never reach another project's ingest. Other
destinations' batches are touched only by retention, which logs what it removes. The file names and
format are in :mod:`beacon_otel.spool_files`; only names this code generates are ever removed.

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
import itertools
import logging
import math
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from beacon_otel import spool_files as files
from beacon_otel.spool_files import DestinationState, destination_fingerprint, destinations
from beacon_otel.spool_retention import Removals, reclaim_leases, remove_stale_temps, sweep_root, unlink

__all__ = [
    "DestinationState",
    "Spool",
    "SpoolStats",
    "SpooledBatch",
    "destination_fingerprint",
    "destinations",
]

logger = logging.getLogger("beacon_otel")

SIZE_RESCAN_SECONDS = 5.0
"""How often the directory's size is measured again; in between, this process's changes are tracked."""
ROOT_SWEEP_SECONDS = 600.0
"""How often retention looks at the other destinations' directories and the previous release's files."""

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


class SpooledBatch:
    """One batch leased from the spool: ack it once it is settled, release it to retry it later."""

    __slots__ = ("_done", "_name", "_size", "_spool", "batch_id", "body", "events", "path")

    def __init__(self, spool: Spool, name: str, path: Path, data: tuple[bytes, int, str], size: int) -> None:
        self._spool = spool
        self._name = name
        self._size = size
        self._done = False
        self.path = path
        self.body, self.events, self.batch_id = data

    def ack(self) -> None:
        """Delivered or permanently refused: delete the leased file."""
        if not self._done:
            self._done = True
            self._spool.stats.recovered += 1  # before the file goes, so an empty spool shows it
            self._spool._delete_lease(self.path, self._size)

    def release(self) -> None:
        """Not delivered: give the lease back so the batch is retried later, in its place in the order."""
        if not self._done:
            self._done = True
            self._spool._return_lease(self.path, self._name)


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
    ) -> None:
        self.root = Path(root)
        self.directory = self.root / destination
        self.stats = SpoolStats()
        self._max_bytes = max_bytes
        self._retention_ns = int(retention * files.NS)
        self._lease_timeout_ns = int(lease_timeout * files.NS)
        self._retry_after = retry_after
        self._clock = clock
        self._last_ns = 0
        self._size = 0
        self._size_measured_at = -math.inf
        self._swept_at = -math.inf
        self._problem: str | None = None
        self._failed_at = self._retry_at = 0.0
        self._usable = self._constructed = False
        self._refused = max_bytes <= 0
        if self._refused:
            return
        if files.FINGERPRINT.fullmatch(destination) is None:
            self._refused = True
            logger.warning("beacon-otel: spool disabled: %r is not a destination fingerprint", destination)
            return
        self._prepare()
        self._constructed = True
        self._report_legacy()
        self._scan(self._now_ns())

    @property
    def enabled(self) -> bool:
        """Whether a write may be tried now: configured, not refused, and not pausing after a disk error."""
        return not self._refused and not self._pausing()

    @property
    def problem(self) -> str | None:
        """Why the last write failed, in words; None once a write succeeds again."""
        return self._problem

    def write(self, body: bytes, events: int, batch_id: str | None = None) -> bool:
        """Store one encoded batch with its Idempotency-Key; False when it was not stored."""
        if self._refused or self._pausing() or not (self._usable or self._prepare()):
            self.stats.write_failures += 1
            return False
        if batch_id is None:
            batch_id = uuid.uuid4().hex
        if files.BATCH_ID.fullmatch(batch_id) is None:
            self.stats.write_failures += 1
            logger.warning("beacon-otel: spool cannot store batch id %r (visible ASCII only)", batch_id[:40])
            return False
        record = files.encode(body, events, batch_id)
        used = self._measured_size()
        if used + len(record) > self._max_bytes:
            # The newest batch is the one refused: one comparison, and no deletes racing other
            # processes' claims, which evicting the oldest would need.
            self.stats.refused_full += 1
            self._set_problem(
                f"spool full ({used} of {self._max_bytes} bytes) at {self.directory}", pause=False
            )
            return False
        pid = os.getpid()
        name = f"{files.BATCH_PREFIX}{self._now_ns():020d}-{pid}-{next(_sequence):06d}-{secrets.token_hex(4)}"
        final = self.directory / f"{name}{files.BATCH_SUFFIX}"
        try:
            self._write_atomically(final, record)
        except OSError as exc:
            self.stats.write_failures += 1
            self._usable = False  # proven again before the next write: the directory may be gone
            self._set_problem(f"cannot write to {self.directory}: {files.describe(exc)}", pause=True)
            return False
        self._size += len(record)
        self.stats.written += 1
        self._problem = None
        return True

    def claim(self) -> SpooledBatch | None:
        """Lease the oldest batch of this destination nobody holds, or None when there is none."""
        if self._refused:
            return None
        now_ns = self._now_ns()
        for name in self._scan(now_ns):
            batch = self._take(name, now_ns)
            if batch is not None:
                return batch
        return None

    def pending(self) -> int:
        """Batches waiting to be claimed (leased ones excluded)."""
        if self._refused:
            return 0
        try:
            with os.scandir(self.directory) as entries:
                return sum(1 for e in entries if files.BATCH_NAME.fullmatch(e.name))
        except OSError:
            return 0

    def size_bytes(self) -> int:
        """Bytes this destination's batches take, measured at most every ``SIZE_RESCAN_SECONDS``."""
        return 0 if self._refused else self._measured_size()

    # -- directory and problems --------------------------------------------------------------

    def _prepare(self) -> bool:
        """Create and check the directories and prove them writable; reports once why not."""
        try:
            for directory in (self.root, self.directory):
                if not directory.is_dir():
                    # mkdir's mode goes through the umask; set it exactly, but only on a directory we
                    # made: an existing one keeps the permissions its owner chose.
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.chmod(directory, 0o700)
                refusal = _refusal(directory)
                if refusal is not None:
                    # Anyone who can write here can plant batches that we would send with our key.
                    self._refused = True
                    logger.warning(
                        "beacon-otel: spool disabled, undeliverable batches will be lost: %s", refusal
                    )
                    return False
            probe = self.directory / f"{files.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            with open(probe, "xb", opener=files.private):
                pass
            os.unlink(probe)
        except OSError as exc:
            problem = f"cannot write to {self.directory}: {files.describe(exc)}"
            if self._problem is None and not self._constructed:
                logger.warning(
                    "beacon-otel: %s; the disk is tried again every %g s", problem, self._retry_after
                )
            self._set_problem(problem, pause=True)
            return False
        self._usable = True
        return True

    def _set_problem(self, problem: str, *, pause: bool) -> None:
        # Told to the user by the delivery side (once a minute, with what happens to the batch);
        # only a directory unusable from the start is logged here, when the spool is made.
        if pause:
            self._failed_at = self._clock()
            self._retry_at = self._failed_at + self._retry_after
        self._problem = problem

    def _pausing(self) -> bool:
        # A clock set back does not stretch the pause.
        return self._failed_at <= self._clock() < self._retry_at

    def _report_legacy(self) -> None:
        legacy = files.legacy_batches(self.root)
        if legacy:
            logger.warning(
                "beacon-otel: %d batches of an earlier version in %s will not be sent (their ingest is not "
                "recorded); they are removed after the retention period",
                len(legacy),
                self.root,
            )

    def _write_atomically(self, final: Path, record: bytes) -> None:
        temp = self.directory / f"{files.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            with open(temp, "xb", opener=files.private) as file:
                file.write(record)
                file.flush()
                # Contents reach the disk before the rename does, so a crash cannot leave a final
                # name over empty data. The directory itself is not fsynced: a power cut may lose the
                # last batches, which is not worth a second fsync on every write.
                os.fsync(file.fileno())
            os.replace(temp, final)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _now_ns(self) -> int:
        # Strictly increasing, so this spool's own batches keep their order when the clock stalls.
        self._last_ns = max(int(self._clock() * files.NS), self._last_ns + 1)
        return self._last_ns

    def _measured_size(self) -> int:
        # Other processes write here too, so the figure is measured again now and then rather than
        # per write; the bound can be overshot by what they wrote since the last measurement.
        if time.monotonic() - self._size_measured_at < SIZE_RESCAN_SECONDS:
            return self._size
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if files.written_at_ns(entry.name) is None and not files.TEMP_NAME.fullmatch(entry.name):
                        continue
                    try:
                        total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed since it was listed
        except OSError:
            return self._size
        self._size = total
        self._size_measured_at = time.monotonic()
        return total

    # -- scanning, retention and leases ------------------------------------------------------

    def _scan(self, now_ns: int) -> list[str]:
        """List the directory once, tidy what is stale, and return the waiting batches oldest first."""
        removals = Removals()
        batches: list[str] = []
        leases: list[str] = []
        temps: list[os.DirEntry[str]] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if files.BATCH_NAME.fullmatch(entry.name):
                        batches.append(entry.name)
                    elif files.LEASE_NAME.fullmatch(entry.name):
                        leases.append(entry.name)
                    elif files.TEMP_NAME.fullmatch(entry.name):
                        temps.append(entry)
        except OSError:
            return []
        self.stats.partial_removed += remove_stale_temps(temps, removals)
        batches += reclaim_leases(self.directory, leases, now_ns, self._lease_timeout_ns, _held)
        waiting = []
        for name in sorted(batches):
            written = files.written_at_ns(name)
            if written is not None and now_ns - written > self._retention_ns:
                if unlink(self.directory / name):
                    self.stats.expired_removed += 1
                    self._size_measured_at = -math.inf
                    removals.add(f"expired after {self._retention_ns / files.NS / 3600:g} h", name)
            else:
                waiting.append(name)
        removals.log(self.directory)
        if time.monotonic() - self._swept_at >= ROOT_SWEEP_SECONDS:
            self._swept_at = time.monotonic()
            self.stats.expired_removed += sweep_root(
                self.root, self.directory.name, now_ns, self._retention_ns, self._lease_timeout_ns
            )
        return waiting

    def _take(self, name: str, now_ns: int) -> SpooledBatch | None:
        """Lease and read one batch; None when another process got it first or it was corrupt."""
        lease = self.directory / f"{name}{files.LEASE_MARK}{os.getpid()}-{now_ns}"
        # Marked held before the rename, so another Spool in this process never takes it for orphaned.
        _held.add(str(lease))
        try:
            os.rename(self.directory / name, lease)
        except OSError:
            _held.discard(str(lease))
            return None  # leased by another process first
        try:
            with open(lease, "rb") as file:
                data = file.read()
        except OSError:
            self._return_lease(lease, name)
            return None  # unreadable for now: left for a later claim, or for retention
        decoded = files.decode(data)
        if decoded is None:
            self.stats.corrupt_removed += 1
            _held.discard(str(lease))
            unlink(lease)
            self._size_measured_at = -math.inf
            removals = Removals()
            removals.add("corrupt", name)
            removals.log(self.directory)
            return None
        return SpooledBatch(self, name, lease, decoded, len(data))

    def _delete_lease(self, lease: Path, size: int) -> None:
        if unlink(lease):
            self._size = max(self._size - size, 0)
        # else: reclaimed by another process as stale; delivery is at least once
        _held.discard(str(lease))

    def _return_lease(self, lease: Path, name: str) -> None:
        # On failure it was reclaimed already; or, if still here, our next claim takes it for orphaned.
        with contextlib.suppress(OSError):
            os.rename(lease, self.directory / name)
        _held.discard(str(lease))


def _refusal(directory: Path) -> str | None:
    info = os.stat(directory)
    if info.st_uid != os.geteuid():
        return f"{directory} is owned by another user"
    if info.st_mode & 0o022:
        return f"{directory} is writable by other users"
    return None
