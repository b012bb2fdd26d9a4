"""What cannot be delivered yet waits on disk, in files several processes share safely.

The directory (mode 0700, files 0600) holds::

    batch-<time_ns:020d>-<pid>-<seq:06d>.json          a batch waiting to be sent
    batch-<...>.json.lease-<pid>-<time_ns>             the same batch, leased by process <pid>
    .tmp-<pid>-<random>                                a batch being written

A batch file is one header line, ``beacon-spool v1 <events> <sha256 hex of body> <batch id>``, then
the exact request body; the batch id (its Idempotency-Key) is sent again with it on replay. Names
sort by write time, so a sorted listing is the replay order. A batch is written to a temporary file,
fsynced and renamed into place, so a reader never sees half of one; it is leased by renaming it,
which only one process can win. Delivery is at least once: a lease whose holder is gone, or that is
older than the lease timeout, goes back to the queue even if its holder was only slow. Processes
sharing a directory must see each other's pids (one host or container): across pid namespaces a
live holder can look dead, which costs a duplicate (stored once by the ingest: same batch id).

Only names of exactly these patterns are ever touched: anything else in the directory (a user's
file, a future format's) is left alone. A file of these names that fails its check is removed, and
every removal is logged with the file's name and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("beacon_otel")

STALE_TEMP_SECONDS = 60.0
"""A temporary file this old was left by a process killed mid-write."""
SIZE_RESCAN_SECONDS = 5.0
"""How often the directory's size is measured again; in between, this process's changes are tracked."""

_PREFIX = "batch-"
_SUFFIX = ".json"
_LEASE = ".lease-"
_TEMP = ".tmp-"
_BATCH_NAME = re.compile(r"batch-(\d{20})-\d+-\d+\.json", re.ASCII)
_LEASE_NAME = re.compile(r"(batch-\d{20}-\d+-\d+\.json)\.lease-(\d+)-(\d+)", re.ASCII)
_FINGERPRINT = re.compile(r"[0-9a-f]{16}", re.ASCII)
_TEMP_NAME = re.compile(r"\.tmp-(\d+)-[0-9a-f]{12}", re.ASCII)
_HEADER = re.compile(rb"beacon-spool v1 (\d+) ([0-9a-f]{64})(?: ([0-9a-f]{32}))?")
_NS = 1_000_000_000

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

    def __init__(
        self, spool: Spool, name: str, path: Path, body: bytes, events: int, size: int, batch_id: str
    ) -> None:
        self._spool = spool
        self._name = name
        self._size = size
        self._done = False
        self.path = path
        self.body = body
        self.events = events
        self.batch_id = batch_id
        """The id the batch was first sent with; a file without one gets one derived from its body."""

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


@dataclass(frozen=True, slots=True)
class Destination:
    """What one destination's subdirectory of a spool root holds (for ``beacon-otel doctor``)."""

    fingerprint: str
    batches: int
    bytes: int
    oldest: float | None
    """When the oldest waiting batch was written (Unix seconds), or None when there is none."""


def list_destinations(root: Path) -> list[Destination]:
    """Each destination under the spool root ``root``: batches waiting, bytes, oldest. Read only."""
    found = []
    try:
        subdirectories = sorted(path for path in Path(root).iterdir() if _FINGERPRINT.fullmatch(path.name))
    except OSError:
        return []
    for directory in subdirectories:
        batches = size = 0
        oldest: int | None = None
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    match = _BATCH_NAME.fullmatch(entry.name.partition(_LEASE)[0])
                    if match is None:
                        continue
                    with contextlib.suppress(OSError):
                        size += entry.stat(follow_symlinks=False).st_size
                    batches += 1
                    oldest = int(match[1]) if oldest is None else min(oldest, int(match[1]))
        except OSError:
            continue  # not a directory, or unreadable: nothing to tell
        found.append(Destination(directory.name, batches, size, None if oldest is None else oldest / _NS))
    return found


def destination_fingerprint(ingest_url: str, ingest_key: str) -> str:
    """The name of a destination's spool subdirectory: 16 hex characters of SHA-256(url, key).

    A batch is replayed only by a process configured with the same ingest URL and key, so events
    never reach another destination; the key itself never appears on disk.
    """
    return hashlib.sha256(f"beacon-spool-destination\0{ingest_url}\0{ingest_key}".encode()).hexdigest()[:16]


class Spool:
    """Undeliverable batches on disk, shared safely by several processes.

    Meant for one thread per process; no public method raises. ``max_bytes=0`` turns it off.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        destination: str = "",
        retention: float = 48 * 3600,
        clock: Callable[[], float] = time.time,
        lease_timeout: float = 300.0,
    ) -> None:
        self.directory = Path(directory) / destination if destination else Path(directory)
        self.problem: str | None = None
        self.stats = SpoolStats()
        self._max_bytes = max_bytes
        self._retention_ns = int(retention * _NS)
        self._lease_timeout_ns = int(lease_timeout * _NS)
        self._clock = clock
        self._last_ns = 0
        self._size = 0
        self._size_measured_at = -math.inf
        self._warned = False
        self._readable = self._writable = False
        if max_bytes <= 0:
            return
        try:
            self._readable = self._writable = self._prepare_directory()
        except OSError as exc:
            self._disable(f"cannot create {self.directory}: {_describe(exc)}")
            return
        if self._readable:
            self._scan(self._now_ns())

    @property
    def enabled(self) -> bool:
        """Whether batches can still be written (False when off, refused, or after a disk error)."""
        return self._writable

    def write(self, body: bytes, events: int, batch_id: str = "") -> bool:
        """Store one encoded batch; False when it was not stored (the caller counts the loss)."""
        if not self._writable:
            self.stats.write_failures += 1
            return False
        digest = hashlib.sha256(body).hexdigest()
        id_field = f" {batch_id}" if re.fullmatch("[0-9a-f]{32}", batch_id) else ""
        record = f"beacon-spool v1 {max(events, 0)} {digest}{id_field}\n".encode() + body
        if self._measured_size() + len(record) > self._max_bytes:
            # The newest batch is the one refused: one comparison, and no deletes racing other
            # processes' claims, which evicting the oldest would need.
            self.stats.refused_full += 1
            self.problem = f"spool full ({self._size} of {self._max_bytes} bytes) at {self.directory}"
            return False
        pid = os.getpid()
        final = self.directory / f"{_PREFIX}{self._now_ns():020d}-{pid}-{next(_sequence):06d}{_SUFFIX}"
        temp = self.directory / f"{_TEMP}{pid}-{secrets.token_hex(6)}"
        try:
            with open(temp, "xb", opener=_private) as file:
                file.write(record)
                file.flush()
                # Contents reach the disk before the rename does, so a crash cannot leave a final
                # name over empty data. The directory itself is not fsynced: a power cut may lose the
                # last batches, which is not worth a second fsync on every write.
                os.fsync(file.fileno())
            os.replace(temp, final)
        except OSError as exc:
            _remove(temp)
            self.stats.write_failures += 1
            # Not turned off: a full disk frees up, a remounted one comes back. The caller keeps
            # the batch in memory and tries the disk again later.
            self.problem = f"cannot write to spool {self.directory}: {_describe(exc)}"
            self._size_measured_at = -math.inf
            return False
        self.problem = None
        self._size += len(record)
        self.stats.written += 1
        return True

    def claim(self) -> SpooledBatch | None:
        """Lease the oldest batch nobody holds, or None when there is none."""
        if not self._readable:
            return None
        now_ns = self._now_ns()
        for name in self._scan(now_ns):
            batch = self._take(name, now_ns)
            if batch is not None:
                return batch
        return None

    def pending(self) -> int:
        """Batches waiting to be claimed (leased ones excluded)."""
        if not self._readable:
            return 0
        try:
            with os.scandir(self.directory) as entries:
                return sum(1 for entry in entries if _BATCH_NAME.fullmatch(entry.name))
        except OSError:
            return 0

    def size_bytes(self) -> int:
        """Bytes the directory holds, measured at most every ``SIZE_RESCAN_SECONDS``."""
        return self._measured_size() if self._readable else 0

    # -- internals ---------------------------------------------------------------------------

    def _prepare_directory(self) -> bool:
        existed = self.directory.is_dir()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not existed:
            # mkdir's mode goes through the umask; set it exactly, but only on a directory we made:
            # an existing one keeps the permissions its owner chose, unless they let others in.
            os.chmod(self.directory, 0o700)
        info = os.stat(self.directory)
        # Anyone who can write here can plant batches that we would send with our key.
        if info.st_uid != os.geteuid():
            self._disable(f"{self.directory} is owned by another user")
            return False
        if info.st_mode & 0o022:
            self._disable(f"{self.directory} is writable by other users")
            return False
        if not os.access(self.directory, os.W_OK | os.X_OK):
            self._disable(f"{self.directory} is not writable")
            return False
        return True

    def _disable(self, reason: str) -> None:
        self._writable = False
        if not self._warned:
            self._warned = True
            logger.warning("beacon-otel: spool disabled, undeliverable batches will be lost: %s", reason)

    def _now_ns(self) -> int:
        # Strictly increasing, so this spool's own batches keep their order when the clock stalls.
        self._last_ns = max(int(self._clock() * _NS), self._last_ns + 1)
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
                    try:
                        total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed since it was listed
        except OSError:
            return self._size
        self._size = total
        self._size_measured_at = time.monotonic()
        return total

    def _scan(self, now_ns: int) -> list[str]:
        """List the directory once, tidy what is stale, and return the waiting batches oldest first."""
        batches: list[str] = []
        leases: list[str] = []
        temps: list[os.DirEntry[str]] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    name = entry.name
                    if _TEMP_NAME.fullmatch(name):
                        temps.append(entry)
                    elif name.startswith(_PREFIX) and _LEASE in name:
                        leases.append(name)  # checked against _LEASE_NAME when reclaimed
                    elif name.startswith(_PREFIX) and name.endswith(_SUFFIX):
                        batches.append(name)
        except OSError:
            return []
        self._remove_stale_temps(temps)
        batches += self._reclaim(leases, now_ns)
        waiting = []
        for name in sorted(batches):
            match = _BATCH_NAME.fullmatch(name)
            if match is None:
                continue  # not a name this spool writes: someone else's file, left alone
            if now_ns - int(match[1]) > self._retention_ns:
                self._drop_expired(name)
            else:
                waiting.append(name)
        return waiting

    def _remove_stale_temps(self, temps: list[os.DirEntry[str]]) -> None:
        for entry in temps:
            pid = entry.name[len(_TEMP) :].partition("-")[0]  # the name matched _TEMP_NAME
            try:
                # Judged on mtime, which the OS stamps from the wall clock, not the injected one.
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age > STALE_TEMP_SECONDS or (pid.isdecimal() and not _alive(int(pid))):
                # A write cut short (kill -9, power loss): never renamed, so never a batch.
                _remove(Path(entry.path))
                self.stats.partial_removed += 1
                logger.info("beacon-otel: removed %s from the spool: a write cut short", entry.path)

    def _reclaim(self, leases: list[str], now_ns: int) -> list[str]:
        """Give back leases whose holder is gone or too slow; returns the batch names restored."""
        restored = []
        me = os.getpid()
        for lease in leases:
            path = self.directory / lease
            match = _LEASE_NAME.fullmatch(lease)
            if match is None:
                continue
            name, pid, leased_ns = match[1], int(match[2]), int(match[3])
            if now_ns - leased_ns <= self._lease_timeout_ns and (
                str(path) in _held if pid == me else _alive(pid)
            ):
                continue
            try:
                os.rename(path, self.directory / name)
            except OSError:
                continue  # another process reclaimed it first
            restored.append(name)
        return restored

    def _drop_expired(self, name: str) -> None:
        try:
            os.unlink(self.directory / name)
        except OSError:
            return  # claimed or removed by another process meanwhile
        self._size_measured_at = -math.inf
        self.stats.expired_removed += 1
        logger.info("beacon-otel: removed %s from the spool: older than the retention", name)

    def _take(self, name: str, now_ns: int) -> SpooledBatch | None:
        """Lease and read one batch; None when another process got it first or it was corrupt."""
        lease = self.directory / f"{name}{_LEASE}{os.getpid()}-{now_ns}"
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
        header, newline, body = data.partition(b"\n")
        match = _HEADER.fullmatch(header)
        if not newline or match is None or hashlib.sha256(body).hexdigest().encode() != match[2]:
            self.stats.corrupt_removed += 1
            _held.discard(str(lease))
            _remove(lease)
            logger.info("beacon-otel: removed %s from the spool: not an intact batch", name)
            self._size_measured_at = -math.inf
            return None
        batch_id = match[3].decode() if match[3] else hashlib.sha256(body).hexdigest()[:32]
        return SpooledBatch(self, name, lease, body, int(match[1]), len(data), batch_id)

    def _delete_lease(self, lease: Path, size: int) -> None:
        try:
            os.unlink(lease)
        except OSError:
            pass  # reclaimed by another process as stale: delivery is at least once
        else:
            self._size = max(self._size - size, 0)
        _held.discard(str(lease))

    def _return_lease(self, lease: Path, name: str) -> None:
        # On failure it was reclaimed already; or, if still here, our next claim takes it for orphaned.
        with contextlib.suppress(OSError):
            os.rename(lease, self.directory / name)
        _held.discard(str(lease))


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists; one we may not signal counts as alive."""
    if pid <= 0:
        return False  # kill(0) would probe our own process group, not a holder
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True
    return True


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)
