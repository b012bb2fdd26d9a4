"""The spool's files on disk: their names, their format, and a read-only listing of a spool root.

A spool root holds one subdirectory per destination, named by its fingerprint (16 hex digits)::

    <root>/<fingerprint>/beacon-spool-v2-<time_ns:020d>-<pid>-<seq:06d>-<random:8 hex>.batch
    <root>/<fingerprint>/<batch name>.lease-<pid>-<time_ns>      the same batch, leased by <pid>
    <root>/<fingerprint>/.beacon-spool-tmp-<pid>-<random:12 hex> a batch being written

A batch file is one header line, ``beacon-spool v2 <events> <batch id> <sha256 hex of body>``, then
the exact request body. The batch id is the request's Idempotency-Key, kept so that a replay sends
the key of the first attempt. Names sort by write time, so a sorted listing is the replay order.

Only names matching these patterns in full are ever renamed or removed, so a root that is an
existing directory with other files in it loses none of them. The previous release (v1) wrote
``batch-<time_ns:020d>-<pid>-<seq:06d>.json`` straight into the root without recording where they
were bound: they are never replayed, and removed only past retention, when their content shows
they are ours.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

FORMAT = b"beacon-spool v2"
BATCH_PREFIX = "beacon-spool-v2-"
BATCH_SUFFIX = ".batch"
LEASE_MARK = ".lease-"
TEMP_PREFIX = ".beacon-spool-tmp-"

BATCH_NAME = re.compile(r"beacon-spool-v2-(\d{20})-\d+-\d{6,}-[0-9a-f]{8}\.batch", re.ASCII)
LEASE_NAME = re.compile(
    r"(beacon-spool-v2-(\d{20})-\d+-\d{6,}-[0-9a-f]{8}\.batch)\.lease-(\d+)-(\d+)", re.ASCII
)
TEMP_NAME = re.compile(r"\.beacon-spool-tmp-(\d+)-[0-9a-f]{12}", re.ASCII)
FINGERPRINT = re.compile(r"[0-9a-f]{16}", re.ASCII)
BATCH_ID = re.compile(r"[\x21-\x7e]{1,200}", re.ASCII)
"""What an Idempotency-Key may hold: visible ASCII, no spaces (the header line is space-separated)."""
_HEADER = re.compile(rb"beacon-spool v2 (\d+) ([\x21-\x7e]{1,200}) ([0-9a-f]{64})", re.ASCII)

QUARANTINE_PREFIX = ".beacon-spool-quarantined-"
"""A file found where a batch should be but not one (a FIFO, a link, bad events): kept, never read."""
MAX_FILE_BYTES = 64 * 1024 * 1024
"""The most of a batch file that is read; anything larger was not written by beacon-otel."""
_HEADER_BYTES = 300

LEGACY_NAME = re.compile(r"batch-(\d{20})-\d+-\d{6}\.json(?:\.lease-\d+-\d+)?", re.ASCII)
LEGACY_FORMAT = b"beacon-spool v1 "

NS = 1_000_000_000


def destination_fingerprint(ingest_url: str, ingest_key: str) -> str:
    """The name of a destination's spool directory: a hash of the ingest URL and key, never the key.

    The URL is taken in its canonical spelling (:func:`canonical_url`): ``https://INGEST.example``,
    ``https://ingest.example:443/`` and ``https://ingest.example.`` are one ingest, so one directory.
    """
    return _fingerprint(canonical_url(ingest_url), ingest_key)


def earlier_fingerprints(ingest_url: str, ingest_key: str) -> list[str]:
    """Directories earlier versions used for this destination: the URL hashed as it was spelled."""
    earlier = _fingerprint(ingest_url, ingest_key)
    return [] if earlier == destination_fingerprint(ingest_url, ingest_key) else [earlier]


def _fingerprint(ingest_url: str, ingest_key: str) -> str:
    digest = hashlib.sha256(b"beacon-spool-destination\0" + ingest_url.encode() + b"\0" + ingest_key.encode())
    return digest.hexdigest()[:16]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """One spelling per ingest: scheme and host in lower case, no trailing dot, no default port,
    no empty path segments or trailing slash, no fragment (the query is kept: it may matter)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = "/" + "/".join(segment for segment in parts.path.split("/") if segment)
    return urlunsplit((scheme, netloc, path.rstrip("/") or "/", parts.query, ""))


def encode(body: bytes, events: int, batch_id: str) -> bytes:
    """A batch file's content."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{FORMAT.decode()} {max(events, 0)} {batch_id} {digest}\n".encode() + body


def decode(data: bytes) -> tuple[bytes, int, str] | None:
    """(body, events, batch id) from a batch file's content; None when it does not verify."""
    header, newline, body = data.partition(b"\n")
    match = _HEADER.fullmatch(header)
    if not newline or match is None or hashlib.sha256(body).hexdigest().encode() != match[3]:
        return None
    return body, int(match[1]), match[2].decode("ascii")


class NotABatch(Exception):
    """A file named like a batch that cannot be one; ``reason`` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_regular(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """At most ``limit`` bytes of the regular file at ``path``; raises ``NotABatch`` for anything else.

    Whoever can write to the spool directory could leave a FIFO (an open would wait for a writer
    forever), a link to another file, or a huge file there: the file is opened without following a
    link and without waiting, checked to be a regular file, and read up to a bound.
    """
    descriptor = _open_regular(path)
    try:
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(descriptor, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if len(data) > limit:
        raise NotABatch(f"larger than {limit} bytes")
    return data


def header_events(path: Path) -> int:
    """The events a batch file's header announces; 0 when it cannot be read as one."""
    try:
        head = _head(path)
    except (OSError, NotABatch):
        return 0
    match = _HEADER.fullmatch(head.partition(b"\n")[0])
    return int(match[1]) if match else 0


def _head(path: Path) -> bytes:
    descriptor = _open_regular(path)
    try:
        return os.read(descriptor, _HEADER_BYTES)
    finally:
        os.close(descriptor)


def _open_regular(path: Path) -> int:
    """A read descriptor on the regular file at ``path``: no link followed, no wait on a FIFO."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotABatch("a symbolic link") from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotABatch("not a regular file")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def events_problem(body: bytes, events: int) -> str | None:
    """Why a verified body is not a batch of ``events`` events (objects), or ``None`` when it is."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return "not JSON"
    items = decoded.get("events") if isinstance(decoded, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return "not a list of event objects"
    if len(items) != events:
        return f"{len(items)} events where its header says {events}"
    return None


def written_at_ns(name: str) -> int | None:
    """When a batch (leased or not) was written, from its name; None for a name not ours."""
    match = BATCH_NAME.fullmatch(name) or LEASE_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match[1] if match.re is BATCH_NAME else match[2])


def is_legacy_batch(path: Path) -> bool:
    """Whether a file in the root is a batch of the previous release: name and content both match."""
    if LEGACY_NAME.fullmatch(path.name) is None:
        return False
    try:
        with open(path, "rb") as file:
            return file.read(len(LEGACY_FORMAT)) == LEGACY_FORMAT
    except OSError:
        return False


def legacy_batches(root: Path) -> list[Path]:
    """The previous release's batches left directly in ``root``, oldest first."""
    try:
        with os.scandir(root) as entries:
            found = [
                Path(e.path)
                for e in entries
                if LEGACY_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []
    return sorted(p for p in found if is_legacy_batch(p))


@dataclass(frozen=True)
class DestinationState:
    """What waits in one destination's spool directory."""

    fingerprint: str
    batches: int
    bytes: int
    oldest: float | None
    """When the oldest batch was written, epoch seconds."""
    events: int = 0
    """Events the batches' headers announce."""


def destinations(root: Path) -> list[DestinationState]:
    """Each destination with a directory under ``root``, read only (for ``beacon-otel doctor``)."""
    states = []
    try:
        with os.scandir(root) as entries:
            places = sorted(
                (e.name, e.path)
                for e in entries
                if FINGERPRINT.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []
    for fingerprint, path in places:
        count = size = events = 0
        oldest: int | None = None
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    written = written_at_ns(entry.name)
                    if written is None:
                        continue
                    try:
                        size += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # acked since it was listed
                    count += 1
                    events += header_events(Path(entry.path))
                    oldest = written if oldest is None else min(oldest, written)
        except OSError:
            continue
        oldest_s = None if oldest is None else oldest / NS
        states.append(DestinationState(fingerprint, count, size, oldest_s, events))
    return states


def private(path: str, flags: int) -> int:
    """An opener creating files readable by their owner only."""
    return os.open(path, flags, 0o600)


def alive(pid: int) -> bool:
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


def describe(exc: OSError) -> str:
    """An OS error in words: ``No space left on device``."""
    return exc.strerror or str(exc)
