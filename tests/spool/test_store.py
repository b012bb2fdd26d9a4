"""Spool: per-destination batch files, FIFO leases shared by processes, corruption, bounds, disk errors."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.spool import files
from beacon_otel.spool.store import DestinationState, Spool, destination_fingerprint, destinations
from tests.support.waiting import wait_until

T0 = 1_780_000_000.0
DISABLED = "beacon-otel: spool disabled, undeliverable batches will be lost: "
MB = 1 << 20
DEST = "0123456789abcdef"
OTHER = "fedcba9876543210"


class FakeClock:
    """Wall-clock seconds that move only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(n: int, **extra: Any) -> bytes:
    return json.dumps({"events": [{"n": n, **extra}]}).encode()


def number(batch_body: bytes) -> int:
    return int(json.loads(batch_body)["events"][0]["n"])


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def make(root: Path, max_bytes: int = MB, destination: str = DEST, **options: Any) -> Spool:
    """A spool of the test destination under ``root``."""
    return Spool(root, destination=destination, max_bytes=max_bytes, **options)


def place(directory: Path, seconds: float, content: bytes, suffix: str = "") -> Path:
    """A batch file written by hand, named as if written at ``seconds``."""
    path = directory / f"beacon-spool-v2-{int(seconds * 1e9):020d}-1-000000-0000abcd.batch{suffix}"
    path.write_bytes(content)
    return path


def legacy(root: Path, seconds: float, n: int) -> Path:
    """A batch file as the previous release wrote it, straight into the root with no destination."""
    content = body(n)
    path = root / f"batch-{int(seconds * 1e9):020d}-1-{n:06d}.json"
    path.write_bytes(f"beacon-spool v1 1 {hashlib.sha256(content).hexdigest()}\n".encode() + content)
    return path


def infos_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "beacon_otel" and r.levelno == logging.INFO]


def drain(spool: Spool) -> list[int]:
    """Claim and ack everything, returning the batch numbers in order; fails if claim never ends."""
    seen: list[int] = []
    for _ in range(10_000):
        batch = spool.claim()
        if batch is None:
            return seen
        seen.append(number(batch.body))
        batch.ack()
    raise AssertionError("claim never ran dry")


def reaches(counter: Any, least: int) -> Callable[[], bool]:
    return lambda: bool(counter.value >= least)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "beacon_otel" and r.levelno >= logging.WARNING
    ]


def test_write_claim_ack_round_trip(tmp_path: Path) -> None:
    """A written batch comes back byte for byte with its event count, and ack deletes it."""
    spool = make(tmp_path / "spool", max_bytes=MB)
    assert spool.enabled
    assert spool.write(b'{"events":[{"a":1},{"a":2}]}', 2)
    assert spool.pending() == 1
    assert spool.size_bytes() > len(b'{"events":[{"a":1},{"a":2}]}')
    batch = spool.claim()
    assert batch is not None
    assert (batch.body, batch.events) == (b'{"events":[{"a":1},{"a":2}]}', 2)
    assert spool.pending() == 0
    assert spool.claim() is None
    batch.ack()
    batch.ack()
    assert names(spool.directory) == []
    assert spool.size_bytes() == 0
    assert (spool.stats.written, spool.stats.recovered) == (1, 1)


def test_counters_rise_before_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever sees a batch file gone sees it counted: recovered and corrupt_removed move first."""
    import beacon_otel.spool.store

    spool = make(tmp_path, max_bytes=MB, clock=FakeClock())
    assert spool.write(body(1), 1)
    place(spool.directory, T0 - 1, b"not a batch")  # older, so claimed first, and corrupt
    seen: list[tuple[int, int]] = []
    remove = beacon_otel.spool.store.unlink

    def removing(path: Path) -> bool:
        seen.append((spool.stats.recovered, spool.stats.corrupt_removed))
        return remove(path)

    monkeypatch.setattr(beacon_otel.spool.store, "unlink", removing)
    batch = spool.claim()  # removes the corrupt one on the way
    assert batch is not None
    batch.ack()
    assert seen == [(0, 1), (1, 1)]


def test_batches_come_back_oldest_first_across_spools_sharing_a_directory(tmp_path: Path) -> None:
    """Two spools sharing a directory interleave into one order by write time."""
    clock = FakeClock()
    first = make(tmp_path, max_bytes=MB, clock=clock)
    second = make(tmp_path, max_bytes=MB, clock=clock)
    for n in range(6):
        clock.now += 1
        assert (first if n % 2 else second).write(body(n), 1)
    assert drain(make(tmp_path, max_bytes=MB, clock=clock)) == list(range(6))


def test_release_keeps_the_batch_and_its_place(tmp_path: Path) -> None:
    """A released batch is claimed again before newer ones."""
    spool = make(tmp_path, max_bytes=MB)
    for n in range(3):
        spool.write(body(n), 1)
    batch = spool.claim()
    assert batch is not None and number(batch.body) == 0
    assert spool.pending() == 2
    batch.release()
    batch.ack()  # settled already: no effect
    assert spool.pending() == 3
    assert drain(spool) == [0, 1, 2]


def test_directory_and_files_are_private(tmp_path: Path) -> None:
    """The root and destination directories are created 0700 (with parents); batch files are 0600."""
    root = tmp_path / "var" / "beacon"
    spool = make(root, max_bytes=MB)
    spool.write(body(1), 1)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in spool.directory.iterdir()] == [0o600]
    batch = spool.claim()
    assert batch is not None
    assert stat.S_IMODE(batch.path.stat().st_mode) == 0o600


def test_existing_directory_keeps_its_permissions(tmp_path: Path) -> None:
    """A private directory made by the operator is used as it is, neither tightened nor loosened."""
    (tmp_path / "spool").mkdir(mode=0o750)
    os.chmod(tmp_path / "spool", 0o750)
    assert make(tmp_path / "spool", max_bytes=MB).write(body(1), 1)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o750


def test_directory_writable_by_others_is_refused_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Others could plant batches in a world-writable directory: the spool stays off, warns once."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    place(shared, T0, b"planted")
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = make(shared, max_bytes=MB)
        assert not spool.enabled
        assert not spool.write(body(1), 1)
        assert spool.claim() is None
        assert spool.pending() == 0
    assert warnings_of(caplog) == [f"{DISABLED}{shared} is writable by other users"]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777
    assert names(shared) == [place(shared, T0, b"planted").name]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_directory_owned_by_another_user_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A directory someone else owns is not used, even when its mode is private."""
    os.chown(tmp_path, 4242, -1)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = make(tmp_path, max_bytes=MB)
    assert not spool.enabled
    assert warnings_of(caplog) == [f"{DISABLED}{tmp_path} is owned by another user"]


def test_max_bytes_zero_turns_the_spool_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With max_bytes=0 nothing is created, written or logged."""
    with caplog.at_level(logging.DEBUG, logger="beacon_otel"):
        spool = make(tmp_path / "spool", max_bytes=0)
        assert not spool.write(body(1), 1)
        assert spool.claim() is None
    assert not spool.enabled
    assert not (tmp_path / "spool").exists()
    assert caplog.records == []


def test_corrupt_truncated_and_empty_files_are_removed_and_the_drain_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch files that fail to verify are deleted, counted and logged by name; the drain goes on."""
    spool = make(tmp_path, max_bytes=MB, clock=FakeClock())
    spool.write(body(7), 1)
    directory = spool.directory
    good = (directory / names(directory)[0]).read_bytes()
    place(directory, T0 - 5, b"\x00\xffgarbage")
    place(directory, T0 - 4, good[:-3])  # the checksum no longer matches
    place(directory, T0 - 3, b"")
    place(directory, T0 - 2, good.replace(b"v2 1", b"v2 x"))
    place(directory, T0 - 1, good.replace(b"v2 ", b"v1 "))
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        assert drain(spool) == [7]
    assert spool.stats.corrupt_removed == 5
    assert names(directory) == []
    removed = [m for m in warnings_of(caplog) if "1 corrupt (beacon-spool-v2-" in m]
    assert len(removed) == 5 and all(str(directory) in m for m in removed)


def test_stale_temporary_files_are_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Temp files older than a minute, or from a dead writer, go (logged); a live writer's fresh one stays."""
    alive = os.getppid()
    directory = tmp_path / DEST
    directory.mkdir(mode=0o700)
    old = directory / f".beacon-spool-tmp-{alive}-{'0' * 12}"
    fresh = directory / f".beacon-spool-tmp-{alive}-{'1' * 12}"
    orphan = directory / f".beacon-spool-tmp-{dead_pid()}-{'2' * 12}"
    for path in (old, fresh, orphan):
        path.write_bytes(b"beacon-spool v2 1 ")
    os.utime(old, (time.time() - 120, time.time() - 120))
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        spool = make(tmp_path, max_bytes=MB)
    assert names(directory) == [fresh.name]
    # Names are listed sorted as text: the two pids may differ in digit count.
    shown = ", ".join(sorted([old.name, orphan.name]))
    assert infos_of(caplog) == [f"beacon-otel: spool removed from {directory}: 2 unfinished writes ({shown})"]
    os.utime(fresh, (time.time() - 120, time.time() - 120))
    assert spool.claim() is None
    assert names(directory) == []
    assert spool.stats.partial_removed == 3


def test_batches_past_retention_are_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Batches older than the retention (since written, by this process) are deleted, counted, WARNING."""
    clock = FakeClock()
    spool = make(tmp_path, max_bytes=MB, retention=3600, clock=clock)
    spool.write(body(1), 1)
    [first] = names(spool.directory)
    clock.now += 1800
    spool.write(body(2), 1)
    clock.now += 1801
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        assert drain(spool) == [2]
    assert spool.stats.expired_removed == 1
    assert warnings_of(caplog) == [
        f"beacon-otel: spool removed from {spool.directory}: 1 expired after 1 h ({first})"
    ]


def test_max_bytes_refuses_new_batches_until_space_is_freed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the bound the newest batch is refused, ``problem`` saying "spool full"; acking frees room."""
    one = len(body(0)) + len(f"beacon-spool v2 1 {'k' * 32} {'0' * 64}\n")
    spool = make(tmp_path, max_bytes=2 * one)
    assert spool.write(body(0), 1)
    assert spool.write(body(1), 1)
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        assert not spool.write(body(2), 1)
        assert not spool.write(body(2), 1)
        full = f"spool full ({2 * one} of {2 * one} bytes) at {spool.directory}"
        assert spool.problem == full
        assert spool.enabled
        assert spool.size_bytes() == 2 * one
        batch = spool.claim()
        assert batch is not None
        batch.ack()
        assert spool.write(body(3), 1)
    assert spool.problem is None
    assert warnings_of(caplog) == []  # told by the delivery side, with what happens to the batch
    assert drain(spool) == [1, 3]
    assert (spool.stats.written, spool.stats.refused_full) == (3, 2)


def lease(spool: Spool, pid: int, leased_at: float) -> None:
    """Make the only waiting batch look leased by ``pid`` at ``leased_at``."""
    [name] = [n for n in names(spool.directory) if n.endswith(".batch")]
    os.rename(spool.directory / name, spool.directory / f"{name}.lease-{pid}-{int(leased_at * 1e9)}")


@pytest.mark.parametrize(
    ("holder", "age", "reclaimed"),
    [
        ("dead", 1, True),
        ("alive", 1, False),
        ("alive", 301, True),
        ("this process, earlier life", 1, True),  # a container restarted with the same pid
        ("no process", 1, True),  # pid 0: kill(0) would probe our own process group
    ],
)
def test_stale_leases_are_reclaimed(tmp_path: Path, holder: str, age: float, reclaimed: bool) -> None:
    """A lease whose holder died, or older than lease_timeout, goes back to the queue; a live one stays."""
    clock = FakeClock()
    spool = make(tmp_path, max_bytes=MB, clock=clock, lease_timeout=300)
    spool.write(body(1), 1)
    pid = {"dead": dead_pid(), "alive": os.getppid(), "no process": 0}.get(holder, os.getpid())
    lease(spool, pid, clock.now)
    clock.now += age
    batch = spool.claim()
    assert (batch is not None) == reclaimed
    if batch is not None:
        assert (number(batch.body), spool.pending()) == (1, 0)


def test_claim_moves_on_when_another_process_leases_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch leased by someone else between listing and renaming is skipped for the next one."""
    spool = make(tmp_path, max_bytes=MB)
    for n in range(2):
        spool.write(body(n), 1)
    rename = os.rename
    lost: list[Any] = []

    def lose_first_race(source: Any, target: Any) -> None:
        if not lost:
            lost.append(source)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        rename(source, target)

    monkeypatch.setattr(os, "rename", lose_first_race)
    batch = spool.claim()
    assert batch is not None and number(batch.body) == 1
    assert spool.stats.corrupt_removed == 0


def test_own_lease_is_not_taken_by_another_spool_in_the_process(tmp_path: Path) -> None:
    """A lease held by this process is not mistaken for one left by an earlier process with its pid."""
    first = make(tmp_path, max_bytes=MB)
    first.write(body(1), 1)
    held = first.claim()
    assert held is not None
    assert make(tmp_path, max_bytes=MB).claim() is None
    held.release()
    assert drain(make(tmp_path, max_bytes=MB)) == [1]


@pytest.mark.parametrize(
    ("call", "code"),
    [("replace", errno.ENOSPC), ("fsync", errno.EIO), ("open", errno.EROFS), ("open", errno.EACCES)],
)
def test_a_disk_error_pauses_writes_then_the_disk_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    """One failed write sets ``problem``, fails fast for retry_after seconds, then writing resumes."""
    clock = FakeClock()
    spool = make(tmp_path, clock=clock, retry_after=5)
    assert spool.write(body(1), 1)
    calls = []

    def fail(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, fail)
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        assert not spool.write(body(2), 1)
        monkeypatch.undo()
        problem = f"cannot write to {spool.directory}: {os.strerror(code)}"
        if code == errno.ENOSPC:  # the disk is full: said in the words of a full spool
            problem = f"spool full (no space left on the device) at {spool.directory}"
        assert spool.problem == problem
        assert not spool.enabled
        clock.now += 4.9
        assert not spool.write(body(3), 1)  # within the pause: the disk is not even tried
        assert len(calls) == 1
        clock.now += 0.2
        assert spool.enabled
        assert spool.write(body(4), 1)
    assert spool.problem is None
    assert warnings_of(caplog) == []  # told by the delivery side, once a minute
    assert (spool.stats.write_failures, spool.stats.written) == (2, 2)
    assert drain(spool) == [1, 4]
    assert names(spool.directory) == []  # no temporary file left behind


def test_enospc_through_several_pauses_never_turns_the_spool_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk through several pauses never turns the spool off; the next write after it stores."""
    clock = FakeClock()
    spool = make(tmp_path, clock=clock)
    replace = os.replace
    full = [True]

    def replacing(source: Any, target: Any) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replace(source, target)

    monkeypatch.setattr(os, "replace", replacing)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        for n in range(4):
            assert not spool.write(body(n), 1)
            clock.now += 6
    full[0] = False
    assert spool.problem == f"spool full (no space left on the device) at {spool.directory}"
    assert spool.write(body(9), 1)
    assert spool.problem is None
    assert spool.stats.write_failures == 4
    assert drain(spool) == [9]


def test_unwritable_directory_is_reported_at_construction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that cannot be written is named in one warning when the spool is made, not later."""
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args)

    clock = FakeClock()
    monkeypatch.setattr(os, "open", read_only)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = make(tmp_path, clock=clock)
        assert warnings_of(caplog) == [
            f"beacon-otel: cannot write to {spool.directory}: Read-only file system; "
            "the disk is tried again every 5 s"
        ]
        assert not spool.enabled
        assert not spool.write(body(1), 1)
    monkeypatch.undo()
    assert len(warnings_of(caplog)) == 1
    clock.now += 5
    assert spool.write(body(2), 1)
    assert drain(spool) == [2]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_directory_without_write_permission_is_reported_at_construction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A root the user may not write to is reported when the spool is made."""
    (tmp_path / DEST).mkdir(mode=0o500)
    os.chmod(tmp_path / DEST, 0o500)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = make(tmp_path)
    assert warnings_of(caplog) == [
        f"beacon-otel: cannot write to {spool.directory}: Permission denied; "
        "the disk is tried again every 5 s"
    ]


def test_unusable_directory_degrades_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory that cannot be created is reported once and no call raises."""
    (tmp_path / "file").write_bytes(b"")
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = make(tmp_path / "file" / "spool", clock=clock)
        assert not spool.write(body(1), 1)
        clock.now += 10
        assert not spool.write(body(1), 1)
        assert spool.claim() is None
        assert (spool.pending(), spool.size_bytes()) == (0, 0)
    assert not spool.enabled
    assert spool.problem == f"cannot write to {spool.directory}: Not a directory"
    assert len(warnings_of(caplog)) == 1


def test_vanished_directory_never_raises_and_is_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls on a deleted directory return quietly; after the pause the directory is created again."""
    clock = FakeClock()
    spool = make(tmp_path / "spool", clock=clock)
    spool.write(body(1), 1)
    spool.write(body(2), 1)
    first, second = spool.claim(), spool.claim()
    assert first is not None and second is not None
    shutil.rmtree(tmp_path / "spool")
    first.ack()
    second.release()
    assert spool.claim() is None
    assert spool.pending() == 0
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        assert not spool.write(body(3), 1)
        assert not spool.write(body(4), 1)
    assert warnings_of(caplog) == []
    assert (spool.problem or "").startswith(f"cannot write to {spool.directory}: ")
    clock.now += 5
    assert spool.write(body(5), 1)
    assert drain(spool) == [5]


def drain_in_child(directory: str, go: Any, out: str) -> None:
    """Child process: claim and ack until nothing is left, recording the batch numbers acked."""
    spool = make(Path(directory), max_bytes=1 << 30)
    go.wait()
    acked = []
    while (batch := spool.claim()) is not None:
        acked.append(number(batch.body))
        batch.ack()
    Path(out).write_text(json.dumps(acked))


def test_concurrent_drain_by_four_processes_acks_each_batch_once(tmp_path: Path) -> None:
    """Four processes draining one directory together deliver each of 200 batches exactly once."""
    spool = make(tmp_path / "spool", max_bytes=1 << 30)
    for n in range(200):
        assert spool.write(body(n), 1)
    context = multiprocessing.get_context("spawn")  # no fork of the test process and its threads
    go = context.Event()
    outs = [tmp_path / f"acked-{i}.json" for i in range(4)]
    children = [
        context.Process(target=drain_in_child, args=(str(tmp_path / "spool"), go, str(out))) for out in outs
    ]
    for child in children:
        child.start()
    go.set()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    acked = [n for out in outs for n in json.loads(out.read_text())]
    assert sorted(acked) == list(range(200))
    assert names(spool.directory) == []


def write_until_killed(directory: str, stored: Any, run: int) -> None:
    """Child process: write large numbered batches forever, counting each one stored."""
    spool = make(Path(directory), max_bytes=1 << 30)
    padding = "x" * 300_000  # large enough for the kill to land mid-write now and then
    n = 0
    while spool.write(body(n, run=run, pad=padding), 1):
        n += 1
        stored.value = n


def test_kill_during_writes_leaves_a_spool_that_drains_completely(tmp_path: Path) -> None:
    """After five writers are killed with SIGKILL, every stored batch drains intact and nothing stalls."""
    context = multiprocessing.get_context("spawn")
    stored_per_run = []
    for run in range(5):
        stored = context.RawValue("i", 0)
        child = context.Process(target=write_until_killed, args=(str(tmp_path), stored, run))
        child.start()
        wait_until(reaches(stored, 2 + run))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        stored_per_run.append(stored.value)
    spool = make(tmp_path, max_bytes=1 << 30)
    drained: dict[int, list[int]] = {run: [] for run in range(5)}
    for _ in range(10_000):
        batch = spool.claim()
        if batch is None:
            break
        event = json.loads(batch.body)["events"][0]
        drained[event["run"]].append(event["n"])
        batch.ack()
    for run, numbers in drained.items():
        # A kill between the rename and the count leaves one more batch than counted.
        assert numbers == list(range(len(numbers)))
        assert len(numbers) - stored_per_run[run] in (0, 1)
    assert spool.stats.corrupt_removed == 0
    assert names(spool.directory) == []  # temporary files of the dead writers are gone too


def test_destination_fingerprint_names_the_destination_without_the_key() -> None:
    """The fingerprint is 16 hex digits, stable, different for another URL or key, and hides the key."""
    url = "https://ingest.example.com/v1/ingest"
    fingerprint = destination_fingerprint(url, "secret-key-A")
    assert fingerprint == destination_fingerprint(url, "secret-key-A")
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert fingerprint != destination_fingerprint(url, "secret-key-B")
    assert fingerprint != destination_fingerprint("https://other.example.com/v1/ingest", "secret-key-A")
    assert "secret" not in fingerprint


def test_two_destinations_on_one_root_never_see_each_others_batches(tmp_path: Path) -> None:
    """A process bound to ingest B never claims, renames or counts what was spooled for ingest A."""
    a = make(tmp_path, destination=destination_fingerprint("https://a.example/v1/ingest", "keyA"))
    b = make(tmp_path, destination=destination_fingerprint("https://b.example/v1/ingest", "keyB"))
    assert a.directory != b.directory and a.directory.parent == b.directory.parent == tmp_path
    for n in range(3):
        assert a.write(body(n), 1, f"a-{n}")
    before = names(a.directory)
    assert b.claim() is None
    assert (b.pending(), b.size_bytes()) == (0, 0)
    assert names(a.directory) == before
    assert b.write(body(10), 1, "b-10")
    assert drain(b) == [10]
    assert drain(a) == [0, 1, 2]


def test_batch_id_round_trips_through_the_file(tmp_path: Path) -> None:
    """The Idempotency-Key written with a batch comes back with it, in another process's Spool too."""
    assert make(tmp_path).write(body(1), 1, "4f1c2a9e-replay-key")
    [name] = names(tmp_path / DEST)
    assert b" 4f1c2a9e-replay-key " in (tmp_path / DEST / name).read_bytes().partition(b"\n")[0]
    batch = make(tmp_path).claim()
    assert batch is not None
    assert (batch.batch_id, number(batch.body), batch.events) == ("4f1c2a9e-replay-key", 1, 1)
    batch.release()
    again = make(tmp_path).claim()
    assert again is not None and again.batch_id == "4f1c2a9e-replay-key"


def test_a_batch_id_that_cannot_be_stored_is_refused(tmp_path: Path) -> None:
    """An id with spaces or control characters would break the header: the write is refused and counted."""
    spool = make(tmp_path)
    assert not spool.write(body(1), 1, "two words")
    assert not spool.write(body(1), 1, "")
    assert spool.stats.write_failures == 2
    assert names(spool.directory) == []


def test_files_the_spool_did_not_write_are_never_touched(tmp_path: Path) -> None:
    """Pointed at a directory with other files, even named like old batches or temps, none goes."""
    old = time.time() - 7 * 24 * 3600
    foreign = {
        "batch-00000000000000000001-1-000001.json": b"user data",  # the v1 name, not v1 content
        "batch-x.json": b"user data",
        ".tmp-1-abc": b"user data",
        ".beacon-spool-tmp-notours": b"user data",
        "beacon-spool-v2-report.batch": b"user data",
        "notes.txt": b"user data",
    }
    (tmp_path / DEST).mkdir(mode=0o700)
    for directory in (tmp_path, tmp_path / DEST, tmp_path / OTHER):
        directory.mkdir(mode=0o700, exist_ok=True)
        for name, content in foreign.items():
            (directory / name).write_bytes(content)
            os.utime(directory / name, (old, old))
    clock = FakeClock(time.time() + 30 * 24 * 3600)
    spool = make(tmp_path, retention=3600, clock=clock)
    assert spool.write(body(1), 1)
    assert drain(spool) == [1]
    for directory in (tmp_path, tmp_path / DEST, tmp_path / OTHER):
        assert {n: (directory / n).read_bytes() for n in foreign} == foreign
    assert names(tmp_path / DEST) == sorted(foreign)
    assert (spool.stats.corrupt_removed, spool.stats.expired_removed, spool.stats.partial_removed) == (
        0,
        0,
        0,
    )


def test_other_destinations_batches_are_removed_only_past_retention_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another destination's batches stay until retention passes, then go with a log line naming them."""
    clock = FakeClock()
    other = make(tmp_path, destination=OTHER, clock=clock)
    assert other.write(body(1), 1)
    [name] = names(other.directory)
    clock.now += 47 * 3600
    make(tmp_path, clock=clock).claim()
    assert names(other.directory) == [name]
    clock.now += 2 * 3600
    caplog.clear()  # the start warning about the other destination's batch, seen above
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        spool = make(tmp_path, clock=clock)
    assert names(other.directory) == []
    assert warnings_of(caplog) == [
        f"beacon-otel: spool removed from {other.directory}: 1 expired after 48 h ({name})"
    ]
    assert spool.stats.expired_removed == 1


def test_previous_release_batches_are_never_claimed_reported_once_and_expire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """v1 batches in the root (destination unknown) are never sent; one warning; retention removes them."""
    clock = FakeClock()
    files = [legacy(tmp_path, T0 - 60, n) for n in range(3)]
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        spool = make(tmp_path, clock=clock)
        assert spool.claim() is None
        assert spool.pending() == 0
        assert spool.write(body(5), 1)
        assert drain(spool) == [5]
    assert warnings_of(caplog) == [
        f"beacon-otel: 3 batches of an earlier version in {tmp_path} will not be sent (their ingest is not "
        "recorded); they are removed after the retention period"
    ]
    assert all(path.exists() for path in files)
    caplog.clear()
    clock.now += 48 * 3600
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        make(tmp_path, clock=clock)
    assert not any(path.exists() for path in files)
    [line] = [line for line in warnings_of(caplog) if "spool removed from" in line]
    assert line.startswith(
        f"beacon-otel: spool removed from {tmp_path}: 3 expired after 48 h, from an earlier version"
    )
    assert files[0].name in line


def test_destinations_lists_each_destination_read_only(tmp_path: Path) -> None:
    """destinations() gives each fingerprint's batch count (leased included), bytes and oldest write time."""
    clock = FakeClock()
    a = make(tmp_path, clock=clock)
    b = make(tmp_path, destination=OTHER, clock=clock)
    assert a.write(body(1), 1)
    clock.now += 10
    assert a.write(body(2), 1)
    assert b.write(body(3), 1)
    held = a.claim()
    assert held is not None
    (tmp_path / "notes").mkdir()
    before = {d: names(tmp_path / d) for d in (DEST, OTHER)}
    size_a = sum(p.stat().st_size for p in a.directory.iterdir())
    size_b = sum(p.stat().st_size for p in b.directory.iterdir())
    assert destinations(tmp_path) == [
        DestinationState(DEST, 2, size_a, T0, events=2),
        DestinationState(OTHER, 1, size_b, T0 + 10, events=1),
    ]
    assert {d: names(tmp_path / d) for d in (DEST, OTHER)} == before
    assert destinations(tmp_path / "missing") == []


@pytest.mark.parametrize(
    "spelling",
    [
        "https://INGEST.example/v1/ingest",
        "https://ingest.example:443/v1/ingest",
        "https://ingest.example./v1/ingest",
        "https://ingest.example//v1/ingest/",
    ],
)
def test_one_ingest_spelled_differently_is_one_destination(spelling: str) -> None:
    """Host case, the default port, a trailing dot and empty path segments do not make a new directory."""
    assert destination_fingerprint(spelling, "k") == destination_fingerprint(
        "https://ingest.example/v1/ingest", "k"
    )
    assert destination_fingerprint("https://ingest.example:8443/v1/ingest", "k") != destination_fingerprint(
        "https://ingest.example/v1/ingest", "k"
    )


def test_batches_in_an_earlier_versions_directory_are_adopted(tmp_path: Path) -> None:
    """Batches under the fingerprint of the URL as spelled (before canonical URLs) move over."""
    url = "https://INGEST.example/v1/ingest"
    [earlier] = files.earlier_fingerprints(url, "k")
    make(tmp_path, destination=earlier).write(body(7), 1)
    spool = make(tmp_path, destination=destination_fingerprint(url, "k"), earlier=(earlier,))
    assert drain(spool) == [7]
    assert names(tmp_path / earlier) == []


def test_expired_batches_are_counted_as_lost_events(tmp_path: Path) -> None:
    """Expiry is a loss: ``lost`` hears ``expired`` with the events the batch held."""
    clock = FakeClock()
    lost: list[tuple[str, int]] = []
    spool = make(tmp_path, retention=3600, clock=clock, lost=lambda reason, n: lost.append((reason, n)))
    spool.write(json.dumps({"events": [{"n": 1}, {"n": 2}]}).encode(), 2)
    clock.now += 3601
    assert spool.claim() is None
    assert lost == [("expired", 2)]


def test_a_batch_another_process_wrote_with_an_old_clock_gets_the_whole_retention(tmp_path: Path) -> None:
    """A name three days old, first seen now, is kept: age counts from the later of the two."""
    clock = FakeClock()
    spool = make(tmp_path, retention=48 * 3600, clock=clock)
    place(spool.directory, T0 - 3 * 86_400, files.encode(body(3), 1, "old-clock"))
    batch = spool.claim()
    assert batch is not None and number(batch.body) == 3


@pytest.mark.parametrize("kind", ["fifo", "symlink", "not objects", "count mismatch"])
def test_a_file_that_is_not_a_batch_is_quarantined_counted_and_never_blocks(
    tmp_path: Path, kind: str
) -> None:
    """FIFOs, links and checksum-valid bodies that are not event objects are set aside, not sent."""
    lost: list[tuple[str, int]] = []
    spool = make(tmp_path, lost=lambda reason, n: lost.append((reason, n)))
    name = "beacon-spool-v2-00000000000000000001-1-000000-0000abcd.batch"
    target = spool.directory / name
    if kind == "fifo":
        os.mkfifo(target, 0o600)
    elif kind == "symlink":
        (tmp_path / "elsewhere").write_bytes(files.encode(body(1), 1, "linked"))
        target.symlink_to(tmp_path / "elsewhere")
    elif kind == "not objects":
        target.write_bytes(files.encode(b'{"events":[1,2]}', 2, "crafted"))
    else:
        target.write_bytes(files.encode(body(1), 5, "crafted"))
    spool.write(body(9), 1)
    assert drain(spool) == [9]
    assert spool.stats.quarantined == 1
    assert names(spool.directory) == [files.QUARANTINE_PREFIX + name]
    events = {"not objects": 2, "count mismatch": 5}.get(kind, 0)  # as the header says; unknown: 0
    assert lost == [("spool_quarantined", events)]
