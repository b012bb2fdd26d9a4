"""Tidying a spool: stale temporary files, abandoned leases, and batches past retention, each logged.

Only names :mod:`beacon_otel.spool.files` generates are touched, so files that happen to share the
spool's directory survive. Other destinations' directories are only ever tidied by retention: their
batches are never read, claimed or renamed here.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from beacon_otel.spool import files

logger = logging.getLogger("beacon_otel")

ROOT_SWEEP_SECONDS = 600.0
"""How often retention looks at the other destinations' directories and the previous release's files."""
STALE_TEMP_SECONDS = 60.0
"""A temporary file this old was left by a process killed mid-write."""
_SHOWN_NAMES = 3
"""File names quoted per reason in a removal log line; the count covers the rest."""


class Removals:
    """What one scan removed, by reason, logged as one line (WARNING when anything was corrupt)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}

    def add(self, reason: str, name: str) -> None:
        self.names.setdefault(reason, []).append(name)

    def log(self, where: Path) -> None:
        if not self.names:
            return
        parts = []
        for reason, unsorted in self.names.items():
            names = sorted(unsorted)
            more = len(names) - _SHOWN_NAMES
            shown = ", ".join(names[:_SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{len(names)} {reason} ({shown})")
        # Corrupt or expired batches are events lost: a WARNING. Unfinished writes never were batches.
        lossy = any(reason == "corrupt" or reason.startswith("expired") for reason in self.names)
        level = logging.WARNING if lossy else logging.INFO
        logger.log(level, "beacon-otel: spool removed from %s: %s", where, "; ".join(parts))


@dataclass(slots=True)
class Listing:
    """One listing of a destination's directory, after tidying: what waits, and what was removed."""

    waiting: list[str] = field(default_factory=list)
    """Batch names nobody holds, oldest first: the replay order."""
    partial_removed: int = 0
    expired_removed: int = 0


class FirstSeen:
    """When this process first listed each batch file: with the name's time, what a batch's age is from.

    A batch's name holds the wall-clock time it was written. A clock days behind then (fixed by NTP
    since) would make a batch look days old the moment it is listed again; so a batch expires only
    once both its name's time and the first time this process saw it (wrote it, or listed it) are
    past retention. First sights are kept in memory, one table per process: after a restart every
    batch gets the whole retention again (the spool's size bound still holds).
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def saw(self, key: str, now_ns: int) -> None:
        """This process wrote the file at ``now_ns``: that is its first sight."""
        self._seen[key] = now_ns

    def age_ns(self, key: str, written_ns: int, now_ns: int) -> int:
        seen = self._seen.setdefault(key, now_ns)
        return now_ns - max(written_ns, seen)

    def keep_only(self, prefix: str, keys: set[str]) -> None:
        """Forget files under ``prefix`` that are gone: the table never outgrows the directory."""
        for key in [k for k in self._seen if k.startswith(prefix) and k not in keys]:
            del self._seen[key]


FIRST_SEEN = FirstSeen()
"""This process's first sights, shared by every spool in it (as the leases it holds are)."""


class Retention:
    """Tidies a destination's directory each time it is listed, and the rest of the root now and then."""

    def __init__(
        self,
        directory: Path,
        *,
        retention: float,
        lease_timeout: float,
        held: set[str],
        lost: Callable[[str, int], None] = lambda reason, events: None,
    ) -> None:
        self._directory = directory
        self.retention_ns = int(retention * files.NS)
        self.lease_timeout_ns = int(lease_timeout * files.NS)
        self._held = held  # paths of the leases this process holds: never reclaimed from under it
        self._swept_at = -math.inf
        self._lost = lost
        self._first_seen = FIRST_SEEN

    def written(self, name: str, now_ns: int) -> None:
        """A batch this process just wrote: its age counts from now."""
        self._first_seen.saw(f"{self._directory}{os.sep}{name}", now_ns)

    def list(self, now_ns: int) -> Listing:
        """List the directory once, tidy what is stale, and return the waiting batches oldest first."""
        directory = self._directory
        removals = Removals()
        listing = Listing()
        batches: list[str] = []
        leases: list[str] = []
        temps: list[os.DirEntry[str]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if files.BATCH_NAME.fullmatch(entry.name):
                        batches.append(entry.name)
                    elif files.LEASE_NAME.fullmatch(entry.name):
                        leases.append(entry.name)
                    elif files.TEMP_NAME.fullmatch(entry.name):
                        temps.append(entry)
        except OSError:
            return listing
        listing.partial_removed = remove_stale_temps(temps, removals)
        batches += reclaim_leases(directory, leases, now_ns, self.lease_timeout_ns, self._held)
        prefix = f"{directory}{os.sep}"
        for name in sorted(batches):
            written = files.written_at_ns(name)
            if (
                written is None
                or self._first_seen.age_ns(prefix + name, written, now_ns) <= self.retention_ns
            ):
                listing.waiting.append(name)
                continue
            events = files.header_events(directory / name)
            if unlink(directory / name):
                listing.expired_removed += 1
                self._lost("expired", events)
                removals.add(f"expired after {self.retention_ns / files.NS / 3600:g} h", name)
        self._first_seen.keep_only(prefix, {prefix + name for name in listing.waiting})
        removals.log(directory)
        if time.monotonic() - self._swept_at >= ROOT_SWEEP_SECONDS:
            self._swept_at = time.monotonic()
            listing.expired_removed += sweep_root(
                directory.parent,
                directory.name,
                now_ns,
                self.retention_ns,
                self.lease_timeout_ns,
                first_seen=self._first_seen,
                lost=self._lost,
            )
        return listing


def unlink(path: Path) -> bool:
    """Remove a file; False when it was gone already (claimed or removed by another process)."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def remove_stale_temps(temps: list[os.DirEntry[str]], removals: Removals) -> int:
    """Remove temporary files of writes cut short (old, or their writer dead); returns how many."""
    removed = 0
    for entry in temps:
        match = files.TEMP_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            # Judged on mtime, which the OS stamps from the wall clock, not the injected one.
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        # A write cut short (kill -9, power loss): never renamed, so never a batch.
        if (age > STALE_TEMP_SECONDS or not files.alive(int(match[1]))) and unlink(Path(entry.path)):
            removed += 1
            removals.add("unfinished writes", entry.name)
    return removed


def reclaim_leases(
    directory: Path, leases: list[str], now_ns: int, lease_timeout_ns: int, held: set[str]
) -> list[str]:
    """Give back leases whose holder is gone or too slow; returns the batch names restored."""
    restored = []
    me = os.getpid()
    for lease in leases:
        path = directory / lease
        match = files.LEASE_NAME.fullmatch(lease)
        if match is None:
            continue
        name, pid, leased_ns = match[1], int(match[3]), int(match[4])
        if now_ns - leased_ns <= lease_timeout_ns and (str(path) in held if pid == me else files.alive(pid)):
            continue
        try:
            os.rename(path, directory / name)
        except OSError:
            continue  # another process reclaimed it first
        restored.append(name)
    return restored


def sweep_root(
    root: Path,
    own: str,
    now_ns: int,
    retention_ns: int,
    lease_timeout_ns: int,
    *,
    first_seen: FirstSeen | None = None,
    lost: Callable[[str, int], None] = lambda reason, events: None,
) -> int:
    """Remove other destinations' and the previous release's batches past retention; returns how many."""
    first_seen = first_seen or FIRST_SEEN
    hours = f"expired after {retention_ns / files.NS / 3600:g} h"
    removed = 0
    legacy = Removals()
    for path in files.legacy_batches(root):
        written = files.LEGACY_NAME.fullmatch(path.name)
        if written is not None and now_ns - int(written[1]) > retention_ns and unlink(path):
            removed += 1
            legacy.add(f"{hours}, from an earlier version", path.name)
    legacy.log(root)
    try:
        with os.scandir(root) as entries:
            others = [
                Path(e.path)
                for e in entries
                if files.FINGERPRINT.fullmatch(e.name) and e.name != own and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return removed
    for directory in others:
        removed += _expire(directory, now_ns, retention_ns, lease_timeout_ns, hours, first_seen, lost)
    return removed


def _expire(
    directory: Path,
    now_ns: int,
    retention_ns: int,
    lease_timeout_ns: int,
    reason: str,
    first_seen: FirstSeen,
    lost: Callable[[str, int], None],
) -> int:
    """Another destination's batches past retention, removed and counted (they were never ours to send)."""
    removals = Removals()
    prefix = f"{directory}{os.sep}"
    try:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries if e.is_file(follow_symlinks=False))
    except OSError:
        return 0
    kept = set()
    for name in names:
        written = files.written_at_ns(name)
        if written is None:
            continue
        if first_seen.age_ns(prefix + name, written, now_ns) <= retention_ns:
            kept.add(prefix + name)
            continue
        lease = files.LEASE_NAME.fullmatch(name)
        if lease is not None and now_ns - int(lease[4]) <= lease_timeout_ns and files.alive(int(lease[3])):
            continue  # its holder is sending it right now
        events = files.header_events(directory / name)
        if unlink(directory / name):
            removals.add(reason, name)
            lost("expired_other_destination", events)
    first_seen.keep_only(prefix, kept)
    removals.log(directory)
    return sum(len(n) for n in removals.names.values())
