"""One destination's spool directory as a place to write: private, proven writable, its size known.

The directory is made 0700 and refused when someone else could write to it (they could plant
batches that would be sent with our key). A disk error never turns the spool off for good: writes
fail fast for ``retry_after`` seconds, then the disk is tried again, and :attr:`problem` says why
meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from beacon_otel.spool import files

logger = logging.getLogger("beacon_otel")

SIZE_RESCAN_SECONDS = 5.0
"""How often the directory's size is measured again; in between, this process's changes are tracked."""


class SpoolDirectory:
    """Where one destination's batches are written, and whether writing may be tried now."""

    def __init__(
        self, root: Path, destination: str, *, retry_after: float, clock: Callable[[], float]
    ) -> None:
        self.root = root
        self.path = root / destination
        self._retry_after = retry_after
        self._clock = clock
        self.refused = False
        """Unusable for good: turned off, not a fingerprint, or others may write to it."""
        self.usable = False
        """Proven writable since the last write error."""
        self.problem: str | None = None
        """Why the last write failed, in words; None once a write succeeds again."""
        self._failed_at = self._retry_at = 0.0
        self.size = 0
        """Bytes of batch and temporary files, as last measured plus this process's changes since."""
        self._size_measured_at = -math.inf

    def prepare(self, *, at_start: bool = False) -> bool:
        """Create and check the directories and prove them writable; warns at start why not."""
        try:
            for directory in (self.root, self.path):
                if not directory.is_dir():
                    # mkdir's mode goes through the umask; set it exactly, but only on a directory we
                    # made: an existing one keeps the permissions its owner chose.
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.chmod(directory, 0o700)
                refusal = _refusal(directory)
                if refusal is not None:
                    # Anyone who can write here can plant batches that we would send with our key.
                    self.refused = True
                    self.problem = f"spool disabled: {refusal}"
                    logger.warning(
                        "beacon-otel: spool disabled, undeliverable batches will be lost: %s", refusal
                    )
                    return False
            probe = self.path / f"{files.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            with open(probe, "xb", opener=files.private):
                pass
            os.unlink(probe)
        except OSError as exc:
            problem = f"cannot write to {self.path}: {files.describe(exc)}"
            if self.problem is None and at_start:
                logger.warning(
                    "beacon-otel: %s; the disk is tried again every %g s", problem, self._retry_after
                )
            self.failed(problem, pause=True)
            return False
        self.usable = True
        return True

    def failed(self, problem: str, *, pause: bool) -> None:
        """A write was refused (full) or failed (``pause``: the disk rests ``retry_after`` seconds)."""
        # Told to the user by the delivery side (once a minute, with what happens to the batch);
        # only a directory unusable from the start is logged here, when the spool is made.
        if pause:
            self._failed_at = self._clock()
            self._retry_at = self._failed_at + self._retry_after
        self.problem = problem

    def pausing(self) -> bool:
        """Whether the disk rests after an error."""
        # A clock set back does not stretch the pause.
        return self._failed_at <= self._clock() < self._retry_at

    def write_atomically(self, final: Path, record: bytes) -> None:
        """Write ``record`` to a temporary file, fsync it and rename it to ``final``."""
        temp = self.path / f"{files.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
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

    def measured_size(self) -> int:
        """Bytes the directory's batches take, measured at most every ``SIZE_RESCAN_SECONDS``."""
        # Other processes write here too, so the figure is measured again now and then rather than
        # per write; the bound can be overshot by what they wrote since the last measurement.
        if time.monotonic() - self._size_measured_at < SIZE_RESCAN_SECONDS:
            return self.size
        total = 0
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if files.written_at_ns(entry.name) is None and not files.TEMP_NAME.fullmatch(entry.name):
                        continue
                    try:
                        total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed since it was listed
        except OSError:
            return self.size
        self.size = total
        self._size_measured_at = time.monotonic()
        return total

    def measure_again(self) -> None:
        """Files were removed behind the tracked figure: measure on the next look."""
        self._size_measured_at = -math.inf

    def report_legacy(self) -> None:
        """Warn once that an earlier version's batches in the root will not be sent."""
        legacy = files.legacy_batches(self.root)
        if legacy:
            logger.warning(
                "beacon-otel: %d batches of an earlier version in %s will not be sent (their ingest is not "
                "recorded); they are removed after the retention period",
                len(legacy),
                self.root,
            )


def _refusal(directory: Path) -> str | None:
    info = os.stat(directory)
    if info.st_uid != os.geteuid():
        return f"{directory} is owned by another user"
    if info.st_mode & 0o022:
        return f"{directory} is writable by other users"
    return None
