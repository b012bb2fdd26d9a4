"""Spool: atomic batch files, FIFO leases shared by processes, corruption, bounds and disk failures."""

from __future__ import annotations

import errno
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

from beacon_otel.spool import Spool, destination_fingerprint, list_destinations

T0 = 1_780_000_000.0
DISABLED = "beacon-otel: spool disabled, undeliverable batches will be lost: "
MB = 1 << 20


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


def place(directory: Path, seconds: float, content: bytes) -> Path:
    """A batch file written by hand, named as if written at ``seconds``."""
    path = directory / f"batch-{int(seconds * 1e9):020d}-1-000000.json"
    path.write_bytes(content)
    return path


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


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


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
    spool = Spool(tmp_path / "spool", max_bytes=MB)
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
    assert names(tmp_path / "spool") == []
    assert spool.size_bytes() == 0
    assert (spool.stats.written, spool.stats.recovered) == (1, 1)


def test_a_batch_comes_back_with_the_id_it_was_first_sent_with(tmp_path: Path) -> None:
    """The batch id (its Idempotency-Key) is stored in the file, so a replay is recognised as a resend."""
    spool = Spool(tmp_path, max_bytes=MB)
    assert spool.write(body(1), 1, "0123456789abcdef0123456789abcdef")
    batch = spool.claim()
    assert batch is not None
    assert batch.batch_id == "0123456789abcdef0123456789abcdef"


def test_destinations_are_listed_without_touching_them(tmp_path: Path) -> None:
    """Each (URL, key) has its own subdirectory, never named by the key; the listing reads only."""
    first = destination_fingerprint("https://a.test/v1/ingest", "key-one")
    second = destination_fingerprint("https://a.test/v1/ingest", "key-two")
    assert first != second and len(first) == 16 and "key" not in first
    one = Spool(tmp_path, destination=first, max_bytes=MB, clock=FakeClock())
    two = Spool(tmp_path, destination=second, max_bytes=MB, clock=FakeClock(T0 + 5))
    assert one.write(body(1), 1) and one.write(body(2), 1) and two.write(body(3), 1)
    (tmp_path / "notes.txt").write_bytes(b"not ours")
    before = names(tmp_path / first) + names(tmp_path / second)
    listed = {d.fingerprint: d for d in list_destinations(tmp_path)}
    assert set(listed) == {first, second}
    assert (listed[first].batches, listed[second].batches) == (2, 1)
    assert listed[first].bytes > 2 * len(body(1)) and listed[first].oldest == pytest.approx(T0)
    assert listed[second].oldest == pytest.approx(T0 + 5)
    assert names(tmp_path / first) + names(tmp_path / second) == before
    assert drain(two) == [3] and drain(one) == [1, 2]  # each replays only its own


def test_a_directory_that_cannot_be_written_is_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool directory without write permission says so once when the spool is made."""
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o500)
    real_access = os.access
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="beacon_otel"):
        if os.geteuid() == 0:  # root writes anywhere: ask the permission bits, as for anyone else
            patch.setattr(os, "access", lambda path, mode: real_access(path, mode) and not mode & os.W_OK)
        spool = Spool(directory, max_bytes=MB)
    assert not spool.enabled
    assert warnings_of(caplog) == [f"{DISABLED}{directory} is not writable"]


def test_a_file_without_an_id_gets_a_stable_one(tmp_path: Path) -> None:
    """A batch written by an earlier version gets an id derived from its body: the same on every replay."""
    spool = Spool(tmp_path, max_bytes=MB)
    assert spool.write(body(1), 1)
    first = spool.claim()
    assert first is not None
    first.release()
    again = spool.claim()
    assert again is not None
    assert len(again.batch_id) == 32
    assert again.batch_id == first.batch_id


def test_counters_rise_before_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever sees a batch file gone sees it counted: recovered and corrupt_removed move first."""
    import beacon_otel.spool

    directory = tmp_path / "spool"
    spool = Spool(directory, max_bytes=MB, clock=FakeClock())
    assert spool.write(body(1), 1)
    place(directory, T0 - 1, b"not a batch")  # older, so claimed first, and corrupt
    seen: list[tuple[int, int]] = []
    remove, delete_lease = beacon_otel.spool._remove, Spool._delete_lease

    def removing(path: Path) -> None:
        seen.append((spool.stats.recovered, spool.stats.corrupt_removed))
        remove(path)

    def deleting(self: Spool, lease: Path, size: int) -> None:
        seen.append((spool.stats.recovered, spool.stats.corrupt_removed))
        delete_lease(self, lease, size)

    monkeypatch.setattr(beacon_otel.spool, "_remove", removing)
    monkeypatch.setattr(Spool, "_delete_lease", deleting)
    batch = spool.claim()  # removes the corrupt one on the way
    assert batch is not None
    batch.ack()
    assert seen == [(0, 1), (1, 1)]


def test_batches_come_back_oldest_first_across_spools_sharing_a_directory(tmp_path: Path) -> None:
    """Two spools sharing a directory interleave into one order by write time."""
    clock = FakeClock()
    first = Spool(tmp_path, max_bytes=MB, clock=clock)
    second = Spool(tmp_path, max_bytes=MB, clock=clock)
    for n in range(6):
        clock.now += 1
        assert (first if n % 2 else second).write(body(n), 1)
    assert drain(Spool(tmp_path, max_bytes=MB, clock=clock)) == list(range(6))


def test_release_keeps_the_batch_and_its_place(tmp_path: Path) -> None:
    """A released batch is claimed again before newer ones."""
    spool = Spool(tmp_path, max_bytes=MB)
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
    """The spool directory is created 0700 (with its parents) and batch files are 0600, leased or not."""
    directory = tmp_path / "var" / "beacon"
    spool = Spool(directory, max_bytes=MB)
    spool.write(body(1), 1)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()] == [0o600]
    batch = spool.claim()
    assert batch is not None
    assert stat.S_IMODE(batch.path.stat().st_mode) == 0o600


def test_existing_directory_keeps_its_permissions(tmp_path: Path) -> None:
    """A private directory made by the operator is used as it is, neither tightened nor loosened."""
    (tmp_path / "spool").mkdir(mode=0o750)
    os.chmod(tmp_path / "spool", 0o750)
    assert Spool(tmp_path / "spool", max_bytes=MB).write(body(1), 1)
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
        spool = Spool(shared, max_bytes=MB)
        assert not spool.enabled
        assert not spool.write(body(1), 1)
        assert spool.claim() is None
        assert spool.pending() == 0
    assert warnings_of(caplog) == [f"{DISABLED}{shared} is writable by other users"]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777
    assert len(names(shared)) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_directory_owned_by_another_user_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A directory someone else owns is not used, even when its mode is private."""
    os.chown(tmp_path, 4242, -1)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = Spool(tmp_path, max_bytes=MB)
    assert not spool.enabled
    assert warnings_of(caplog) == [f"{DISABLED}{tmp_path} is owned by another user"]


def test_max_bytes_zero_turns_the_spool_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With max_bytes=0 nothing is created, written or logged."""
    with caplog.at_level(logging.DEBUG, logger="beacon_otel"):
        spool = Spool(tmp_path / "spool", max_bytes=0)
        assert not spool.write(body(1), 1)
        assert spool.claim() is None
    assert not spool.enabled
    assert not (tmp_path / "spool").exists()
    assert caplog.records == []


def test_corrupt_truncated_and_empty_files_are_removed_and_the_drain_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch files that fail to verify are deleted, counted and logged by name; others' files stay."""
    spool = Spool(tmp_path, max_bytes=MB, clock=FakeClock())
    spool.write(body(7), 1)
    good = (tmp_path / names(tmp_path)[0]).read_bytes()
    place(tmp_path, T0 - 4, b"\x00\xffgarbage")
    place(tmp_path, T0 - 3, good[:-3])  # the checksum no longer matches
    place(tmp_path, T0 - 2, b"")
    place(tmp_path, T0 - 1, good.replace(b"v1 1", b"v1 x"))
    foreign = ["batch-not-a-time.json", "batch-2024.json", ".tmp-notes", "notes.txt"]
    for name in foreign:
        (tmp_path / name).write_bytes(good)
    with caplog.at_level(logging.INFO, logger="beacon_otel"):
        assert drain(spool) == [7]
    assert spool.stats.corrupt_removed == 4
    assert names(tmp_path) == sorted(foreign)  # names this spool never writes are not its own
    removals = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert len(removals) == 4 and all("not an intact batch" in line for line in removals), removals


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    """Temp files older than a minute, or from a dead writer, go; a live writer's fresh one stays."""
    alive = os.getppid()
    old = tmp_path / f".tmp-{alive}-00000000000a"
    fresh = tmp_path / f".tmp-{alive}-00000000000f"
    orphan = tmp_path / f".tmp-{dead_pid()}-0000000000aa"
    for path in (old, fresh, orphan):
        path.write_bytes(b"beacon-spool v1 1 ")
    os.utime(old, (time.time() - 120, time.time() - 120))
    spool = Spool(tmp_path, max_bytes=MB)
    assert names(tmp_path) == [fresh.name]
    os.utime(fresh, (time.time() - 120, time.time() - 120))
    assert spool.claim() is None
    assert names(tmp_path) == []


def test_batches_past_retention_are_removed(tmp_path: Path) -> None:
    """Batches older than the retention (by the time in their name) are deleted and counted."""
    clock = FakeClock()
    spool = Spool(tmp_path, max_bytes=MB, retention=3600, clock=clock)
    spool.write(body(1), 1)
    clock.now += 1800
    spool.write(body(2), 1)
    clock.now += 1801
    assert drain(spool) == [2]
    assert spool.stats.expired_removed == 1


def test_max_bytes_refuses_new_batches_until_space_is_freed(tmp_path: Path) -> None:
    """Past the bound the newest batch is refused; acking frees room for the next one."""
    one = len(body(0)) + len(f"beacon-spool v1 1 {'0' * 64}\n")
    spool = Spool(tmp_path, max_bytes=2 * one)
    assert spool.write(body(0), 1)
    assert spool.write(body(1), 1)
    assert not spool.write(body(2), 1)
    assert spool.enabled
    assert spool.size_bytes() == 2 * one
    batch = spool.claim()
    assert batch is not None
    batch.ack()
    assert spool.write(body(3), 1)
    assert drain(spool) == [1, 3]
    assert (spool.stats.written, spool.stats.refused_full) == (3, 1)


def lease(spool: Spool, pid: int, leased_at: float) -> None:
    """Make the only waiting batch look leased by ``pid`` at ``leased_at``."""
    [name] = [n for n in names(spool.directory) if n.endswith(".json")]
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
    spool = Spool(tmp_path, max_bytes=MB, clock=clock, lease_timeout=300)
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
    spool = Spool(tmp_path, max_bytes=MB)
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
    first = Spool(tmp_path, max_bytes=MB)
    first.write(body(1), 1)
    held = first.claim()
    assert held is not None
    assert Spool(tmp_path, max_bytes=MB).claim() is None
    held.release()
    assert drain(Spool(tmp_path, max_bytes=MB)) == [1]


@pytest.mark.parametrize(
    ("call", "code"),
    [("replace", errno.ENOSPC), ("fsync", errno.EIO), ("open", errno.EROFS), ("open", errno.EACCES)],
)
def test_a_disk_error_refuses_the_write_and_the_disk_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    """A failing write is refused with its reason (``problem``), nothing raised, and the spool stays on."""
    spool = Spool(tmp_path, max_bytes=MB)
    assert spool.write(body(1), 1)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, fail)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        assert not spool.write(body(2), 1)
        assert not spool.write(body(3), 1)
    monkeypatch.undo()
    assert spool.problem == f"cannot write to spool {tmp_path}: {os.strerror(code)}"
    assert warnings_of(caplog) == []  # the delivery side says it, once a minute
    assert spool.stats.write_failures == 2
    assert [n for n in names(tmp_path) if n.startswith(".tmp-")] == []  # no temporary file left
    assert spool.enabled and spool.write(body(4), 1)  # the disk came back: writing goes on
    assert spool.problem is None
    assert drain(spool) == [1, 4]


def test_unusable_directory_degrades_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory that cannot be created disables the spool with one warning and no exception."""
    (tmp_path / "file").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        spool = Spool(tmp_path / "file" / "spool", max_bytes=MB)
        assert not spool.write(body(1), 1)
        assert spool.claim() is None
        assert (spool.pending(), spool.size_bytes()) == (0, 0)
    assert not spool.enabled
    assert len(warnings_of(caplog)) == 1


def test_vanished_directory_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Claim, pending, ack and release on a deleted directory return quietly; a write is refused, why told."""
    spool = Spool(tmp_path / "spool", max_bytes=MB)
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
    assert warnings_of(caplog) == []  # told by the delivery side, once a minute
    problem = spool.problem or ""
    assert problem.startswith(f"cannot write to spool {tmp_path / 'spool'}")


def drain_in_child(directory: str, go: Any, out: str) -> None:
    """Child process: claim and ack until nothing is left, recording the batch numbers acked."""
    spool = Spool(Path(directory), max_bytes=1 << 30)
    go.wait()
    acked = []
    while (batch := spool.claim()) is not None:
        acked.append(number(batch.body))
        batch.ack()
    Path(out).write_text(json.dumps(acked))


def test_concurrent_drain_by_four_processes_acks_each_batch_once(tmp_path: Path) -> None:
    """Four processes draining one directory together deliver each of 200 batches exactly once."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
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
    assert names(tmp_path / "spool") == []


def write_until_killed(directory: str, stored: Any, run: int) -> None:
    """Child process: write large numbered batches forever, counting each one stored."""
    spool = Spool(Path(directory), max_bytes=1 << 30)
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
    spool = Spool(tmp_path, max_bytes=1 << 30)
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
    assert names(tmp_path) == []  # temporary files of the dead writers are gone too
