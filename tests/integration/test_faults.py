"""Delivery you can trust: real servers under opentelemetry-instrument against an ingest that fails.

Each request hits ``/items/{n}`` with a unique ``n``, so every event names its request: after
the fault is over, each served number must have arrived exactly once. The strict dev ingest
refuses connections (stopped, then started again on the same port), answers 5xx, 429 or 401,
or hangs; apps are SIGTERMed and SIGKILLed; the spool is always a test's temporary directory.
``pytest -s -k faults`` prints one line of figures per scenario.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.devingest import DevIngest, Fault, format_rejection, validate_event
from beacon_otel.spool.store import destinations
from tests.support.apps import APPS

from .conftest import Launch, clean_environ, free_port
from .faults_support import (
    BAD_INPUT,
    Load,
    RawAnswer,
    RawProbe,
    RssSampler,
    beacon_env,
    destination_dir,
    get_json,
    item_numbers,
    read_spool,
    send_raw,
    spool_files,
    stats_by_worker,
    stats_when_idle,
    summary,
    tally,
    terminate_timed,
    wait_until,
)

pytestmark = pytest.mark.integration

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "load_fastapi:app"]
RSS_GROWTH_BOUND_MIB = 100


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[DevIngest]:
    """A strict dev ingest on a fixed port, events in a file: it can stop and start again."""
    server = DevIngest(port=free_port(), db_path=str(tmp_path / "ingest.sqlite"))
    server.start()
    yield server
    server.stop()


def arrival_order(events: list[dict[str, Any]]) -> list[int]:
    """The request numbers of ``events``, in their order."""
    return [number for event in events for number in item_numbers([event])]


def hold(seconds: float) -> None:
    """Let a phase of the scenario last ``seconds`` (traffic runs on its own threads meanwhile)."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(remaining, 0.1))


# -- 1. ingest refusing connections under load ---------------------------------------------------


def test_ten_second_outage_under_load_loses_nothing(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Ingest refusing connections for 10 s at ~200 req/s: 0 lost, 0 duplicated, RSS bounded."""
    spool = tmp_path / "spool"
    server = launch(UVICORN, beacon_env(ingest.base_url, spool))
    assert server.process is not None
    load = Load(server.port, rate=200, threads=2)
    with RssSampler(server.process.pid) as rss:
        load.start()
        try:
            wait_until(lambda: ingest.stats()["events_accepted"] > 0, 10, "first events before the outage")
            hold(1.0)
            rss.phase = "during"
            ingest.stop()
            down_at = time.monotonic()
            served_before = len(load.served)
            hold(10.0)
            ingest.start()
            outage = time.monotonic() - down_at
            served_during = len(load.served) - served_before
            rss.phase = "after"
            hold(2.0)
        finally:
            load.stop()
        served = load.ok()
        wait_until(lambda: set(item_numbers(ingest.events())) >= served, 45, "every served request")
        # Nothing left anywhere that could still arrive later as a duplicate.
        stats = stats_when_idle(server.port)
        wait_until(lambda: not read_spool(spool).batches, 10, "an empty spool")
        recovered_at = time.monotonic()
    exit_seconds = terminate_timed(server)
    result = tally(served, item_numbers(ingest.events()), load.attempted)
    delivery = stats["delivery"]
    rss_before, rss_peak, rss_after = rss.peak_mib("before"), rss.peak_mib("during"), rss.last_mib("after")
    summary(
        "outage-10s",
        served=result.served,
        served_during_outage=served_during,
        outage_s=f"{outage:.1f}",
        rate=f"{load.achieved_rate():.0f}/s",
        client_failures=sum(load.failures.values()),
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        sent=delivery["sent"],
        retried=delivery["retried"],
        spooled=delivery["spooled"],
        recovered=delivery["recovered"],
        dropped=delivery["dropped_total"],
        recovery_s=f"{recovered_at - down_at - outage:.1f}",
        rss_before_mib=f"{rss_before:.0f}",
        rss_peak_during_mib=f"{rss_peak:.0f}",
        rss_after_mib=f"{rss_after:.0f}",
        exit_s=f"{exit_seconds:.2f}",
        ingest_rejected=ingest.stats()["batches_rejected"],
    )
    assert served_during >= 1500, f"only {served_during} requests served during the outage"
    assert load.failures == {}, load.failures
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert delivery["dropped_total"] == 0, delivery
    assert ingest.stats()["batches_rejected"] == 0
    assert rss_peak - rss_before < RSS_GROWTH_BOUND_MIB
    assert rss_after - rss_before < RSS_GROWTH_BOUND_MIB


# -- 2. 5xx then 429 with Retry-After --------------------------------------------------------------


def test_retry_after_is_honoured_after_503s(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """3 x 503 then 429 Retry-After: 2: no POST inside those 2 s; then everything, exactly once."""
    retry_after = 2.0
    ingest.script([Fault(status=503)] * 3 + [Fault(status=429, headers={"Retry-After": "2"})])
    env = beacon_env(ingest.base_url, tmp_path / "spool", BEACON_BATCH_SIZE="50", BEACON_FLUSH_INTERVAL="0.5")
    server = launch(UVICORN, env)
    load = Load(server.port, rate=100, threads=2).run_for(4.0)
    served = load.ok()
    wait_until(lambda: set(item_numbers(ingest.events())) >= served, 40, "every served request")
    stats = stats_when_idle(server.port)
    arrivals = ingest.arrivals()
    result = tally(served, item_numbers(ingest.events()), load.attempted)
    statuses = [arrival["status"] for arrival in arrivals]
    throttled = arrivals[3]
    quiet = arrivals[4]["monotonic"] - throttled["finished"]
    gaps = [later["monotonic"] - earlier["finished"] for earlier, later in itertools.pairwise(arrivals[:5])]
    summary(
        "503x3-429",
        served=result.served,
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        posts=len(arrivals),
        first_statuses=statuses[:5],
        gaps_s=[f"{gap:.2f}" for gap in gaps],
        after_429_s=f"{quiet:.2f}",
        retried=stats["delivery"]["retried"],
        spooled=stats["delivery"]["spooled"],
    )
    assert statuses[:4] == [503, 503, 503, 429], statuses
    assert all(arrival["outcome"] == "accepted" for arrival in arrivals[4:]), arrivals
    # The client learns of the 429 after the ingest recorded it finished, so this is a lower bound.
    assert quiet >= retry_after, f"a POST came {quiet:.3f}s after the 429"
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert ingest.stats()["batches_rejected"] == 0


# -- 3. a permanent 401 ----------------------------------------------------------------------------


def test_wrong_key_is_dropped_without_retry_and_logged_once(launch: Launch, tmp_path: Path) -> None:
    """401 for a wrong key: one POST per batch, nothing spooled, one WARNING line about it per run."""
    batch_size, batches = 20, 5
    spool = tmp_path / "spool"
    with DevIngest(ingest_key="the-right-key") as ingest:
        env = beacon_env(
            ingest.base_url,
            spool,
            BEACON_INGEST_KEY="a-wrong-key",
            BEACON_BATCH_SIZE=str(batch_size),
            BEACON_FLUSH_INTERVAL="60",  # only full batches go: each burst below is exactly one
        )
        server = launch(UVICORN, env)
        served: set[int] = set()
        for burst in range(batches):
            load = Load(server.port, rate=200, threads=1, first=burst * batch_size, max_requests=batch_size)
            served |= load.drain(10).ok()
            wait_until(lambda n=burst + 1: len(ingest.arrivals()) >= n, 10, f"POST of batch {burst + 1}")
        # A retry after a 401 would come within the first backoff (at most 1 s): wait well past it.
        hold(2.5)
        arrivals = ingest.arrivals()
        stats = get_json(server.port, "/_beacon/stats")
        files_during = spool_files(spool)
        exit_seconds = terminate_timed(server)
        spool_after_exit = spool_files(spool)
        ingest_stats = ingest.stats()
    lines = [line for line in server.log().splitlines() if "beacon-otel" in line]
    about_401 = [line for line in lines if "401" in line]
    delivery = stats["delivery"]
    summary(
        "401",
        served=len(served),
        batches=batches,
        posts=len(arrivals),
        statuses=sorted({a["status"] for a in arrivals}),
        dropped=delivery["dropped"],
        retried=delivery["retried"],
        spooled=delivery["spooled"],
        spool_files=len(spool_after_exit),
        warning_lines_401=len(about_401),
        beacon_lines=len(lines),
        exit_s=f"{exit_seconds:.2f}",
    )
    assert len(served) == batch_size * batches
    assert len(arrivals) == batches, arrivals
    assert all(a["status"] == 401 for a in arrivals), arrivals
    assert ingest_stats["batches_rejected"] == batches and ingest_stats["events_accepted"] == 0
    assert delivery["dropped"] == {"rejected": batch_size * batches}, delivery
    assert (delivery["retried"], delivery["spooled"], delivery["sent"]) == (0, 0, 0), delivery
    assert files_during == [] and spool_after_exit == []
    assert len(about_401) == 1, lines
    # Besides it, only the startup line and the shutdown summary of what was dropped.
    others = [line for line in lines if line not in about_401]
    assert len(others) == 2, lines
    assert f"beacon-otel: sending to {ingest.base_url}" in others[0] and "ingest-key" not in others[0]
    assert others[1].endswith("beacon-otel: 0 events sent, 100 dropped (rejected=100)"), lines
    assert "refused by the ingest" in about_401[0], about_401


# -- 4. SIGTERM while the ingest is down, then a restart --------------------------------------------

SHUTDOWN_TIMEOUT = 2.0
EXIT_SLACK = 3.0


def test_sigterm_during_outage_spools_and_restart_delivers(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Ingest down, SIGTERM: exit within the bound, events on disk; restarted: each one delivered once."""
    spool = tmp_path / "spool"
    env = beacon_env(ingest.base_url, spool, BEACON_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))
    ingest.stop()
    first = launch(UVICORN, env)
    load = Load(first.port, rate=150, threads=2, max_requests=450).drain(20)
    served = load.ok()
    exit_seconds = terminate_timed(first)
    on_disk = read_spool(spool)
    spooled = item_numbers(on_disk.events())

    ingest.start()
    second = launch(UVICORN, env)  # no traffic: the spool is replayed at start
    wait_until(lambda: set(item_numbers(ingest.events())) >= served, 20, "every spooled event")
    wait_until(lambda: not spool_files(spool), 10, "an empty spool directory")
    stats = get_json(second.port, "/_beacon/stats")
    restart_exit = terminate_timed(second)
    result = tally(served, item_numbers(ingest.events()), load.attempted)
    summary(
        "sigterm-outage-restart",
        served=result.served,
        exit_s=f"{exit_seconds:.2f}",
        bound_s=SHUTDOWN_TIMEOUT + EXIT_SLACK,
        spool_files=on_disk.files(),
        spooled_events=sum(spooled.values()),
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        recovered=stats["delivery"]["recovered"],
        restart_exit_s=f"{restart_exit:.2f}",
    )
    assert len(served) == 450 and load.failures == {}
    assert exit_seconds < SHUTDOWN_TIMEOUT + EXIT_SLACK
    assert on_disk.corrupt == [] and on_disk.temporary == [] and on_disk.leased == []
    assert set(spooled) == served and max(spooled.values()) == 1, "every event spooled exactly once"
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert stats["delivery"]["recovered"] == len(served)
    assert ingest.stats()["batches_rejected"] == 0
    assert arrival_order(ingest.events()) == arrival_order(on_disk.events()), "replayed oldest first"


def test_sigterm_with_a_hung_ingest_exits_within_the_bound(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """An ingest that accepts and never answers: SIGTERM still exits within the bound, events spooled."""
    spool = tmp_path / "spool"
    ingest.script([Fault(hang=60)] * 20)
    env = beacon_env(
        ingest.base_url,
        spool,
        BEACON_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        BEACON_TIMEOUT="30",  # the request would outlast the bound by far
        BEACON_BATCH_SIZE="50",
    )
    server = launch(UVICORN, env)
    load = Load(server.port, rate=150, threads=2, max_requests=300).drain(20)
    served = load.ok()
    wait_until(lambda: any(a["outcome"] == "pending" for a in ingest.arrivals()), 10, "a hung POST")
    exit_seconds = terminate_timed(server)
    on_disk = read_spool(spool)
    spooled = item_numbers(on_disk.events())
    summary(
        "sigterm-hung-ingest",
        served=len(served),
        hung_posts=sum(1 for a in ingest.arrivals() if a["outcome"] == "pending"),
        exit_s=f"{exit_seconds:.2f}",
        bound_s=SHUTDOWN_TIMEOUT + EXIT_SLACK,
        spool_files=on_disk.files(),
        spooled_events=sum(spooled.values()),
        lost=len(served - set(spooled)),
        duplicated=sum(count - 1 for count in spooled.values()),
    )
    assert len(served) == 300
    assert exit_seconds < SHUTDOWN_TIMEOUT + EXIT_SLACK
    # The batch on the hung connection is spooled too: at least once, never lost.
    assert set(spooled) == served and max(spooled.values()) == 1


# -- 5. four gunicorn workers sharing one spool -----------------------------------------------------

GUNICORN = [
    "gunicorn",
    "--workers",
    "4",
    "--bind",
    "127.0.0.1:{port}",
    "--no-control-socket",
    "--graceful-timeout",
    "10",
    "load_flask:app",
]
GUNICORN_EXIT_BOUND = 8.0


def test_gunicorn_workers_share_a_spool_without_duplicates(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """4 gunicorn workers through an outage: leftovers spooled at SIGTERM, each delivered once after."""
    spool = tmp_path / "spool"
    env = beacon_env(ingest.base_url, spool, BEACON_BATCH_SIZE="20")
    ingest.stop()
    first = launch(GUNICORN, env)
    load = Load(first.port, rate=150, threads=6, keep_alive=False, max_requests=600).drain(30)
    served = load.ok()
    workers = load.pids()
    exit_seconds = terminate_timed(first)
    on_disk = read_spool(spool)
    spooled = item_numbers(on_disk.events())
    writers = {name.split("-")[4] for name in on_disk.batches}

    # Restarted while the ingest is still down: each worker's traffic starts its delivery thread,
    # so when the ingest comes back the arbiter and all four workers replay the spool at once.
    second = launch(GUNICORN, env)
    again = Load(second.port, rate=150, threads=6, keep_alive=False, first=10_000, max_requests=300).drain(30)
    served_again = again.ok()
    ingest.start()
    everything = served | served_again
    wait_until(lambda: set(item_numbers(ingest.events())) >= everything, 40, "every event")
    wait_until(lambda: not spool_files(spool), 15, "an empty spool directory")
    per_worker = stats_by_worker(second.port, workers=4)
    recovered_by_worker = sorted(stats["delivery"]["recovered"] for stats in per_worker.values())
    restart_exit = terminate_timed(second)
    result = tally(everything, item_numbers(ingest.events()), load.attempted | again.attempted)
    summary(
        "gunicorn-4-workers",
        served=len(served),
        per_worker=sorted(workers.values()),
        exit_s=f"{exit_seconds:.2f}",
        spool_files=on_disk.files(),
        spool_writers=len(writers),
        spooled_events=sum(spooled.values()),
        served_after_restart=len(served_again),
        workers_after_restart=len(again.pids()),
        recovered_by_worker=recovered_by_worker,
        recovered_by_arbiter=sum(spooled.values()) - sum(recovered_by_worker),
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        restart_exit_s=f"{restart_exit:.2f}",
        ingest_posts=len(ingest.arrivals()),
    )
    assert len(served) == 600 and len(served_again) == 300
    # Below the 10 s graceful timeout: no worker had to be killed (gunicorn alone takes about 2 s).
    assert exit_seconds < GUNICORN_EXIT_BOUND and restart_exit < GUNICORN_EXIT_BOUND
    assert len(workers) == 4, f"traffic reached only workers {workers}"
    assert set(spooled) == served and max(spooled.values()) == 1, "every event spooled exactly once"
    assert len(writers) >= 4, f"only {writers} wrote to the spool"
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert ingest.stats()["batches_rejected"] == 0


# -- 6. kill -9 while spooling ----------------------------------------------------------------------

SPOOL_WRITER = [sys.executable, str(APPS / "spool_writer.py")]
KILL_ROUNDS = 5


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Plain subprocesses of one test, each in its own session; all killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def spawn(processes: list[subprocess.Popen[bytes]], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*SPOOL_WRITER, *args],
            cwd=APPS,
            env=clean_environ(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.append(process)
    return process


def kill_while_spooling(
    processes: list[subprocess.Popen[bytes]], spool: Path, url: str, round_: int, delay: float, logs: Path
) -> subprocess.Popen[bytes]:
    """Start a writer, let it spool for ``delay`` seconds after its first batch file, SIGKILL it."""
    log = logs / f"writer-{round_}.log"
    writer = spawn(
        processes,
        [
            *("write", "--spool", str(spool), "--url", url),
            *("--rate", "1000", "--batch-size", "10", "--first", str(round_ * 1_000_000)),
        ],
        log,
    )
    mine = f"-{writer.pid}-"
    wait_until(
        lambda: any(mine in p.name for p in spool.rglob("beacon-spool-v2-*")) or writer.poll() is not None,
        20,
        "the writer spooling",
    )
    assert writer.poll() is None, log.read_text()
    hold(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    return writer


def counters_of(output: str) -> Any:
    """The writer's JSON counters, printed on stdout among Beacon's own log lines."""
    return json.loads(next(line for line in output.splitlines() if line.startswith("{")))


def plant_kill_leftovers(spool: Path, dead_pid: int) -> None:
    """What a kill in the middle of a claim or a write leaves, in case the random kills missed both."""
    newest = sorted(p.name for p in spool.iterdir() if p.name.endswith(".batch"))[-1]
    (spool / newest).rename(spool / f"{newest}.lease-{dead_pid}-{time.time_ns()}")
    partial = spool / f".beacon-spool-tmp-{dead_pid}-0123456789ab"
    partial.write_bytes((spool / sorted(p.name for p in spool.iterdir())[-1]).read_bytes()[:100])
    partial.chmod(0o600)


FOREIGN_FILE = "batch-not-a-batch-name.json"


def plant_corrupt_batches(spool: Path, intact: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Files a crash, a full disk or a stray tool could leave: truncated, empty, garbage, misnamed."""
    oldest = sorted(intact)[0]
    data = (spool / oldest).read_bytes()
    written_ns = int(oldest.split("-")[3])  # planted just before it: replayed first
    planted = {
        f"beacon-spool-v2-{written_ns - 3:020d}-1-000001-0000abcd.batch": data[: len(data) // 2],  # truncated
        f"beacon-spool-v2-{written_ns - 2:020d}-1-000002-0000abcd.batch": b"",  # empty
        f"beacon-spool-v2-{written_ns - 1:020d}-1-000003-0000abcd.batch": b"beacon-spool v2 1 k %s\n{}"
        % (b"0" * 64),  # bad digest
    }
    # A name this version never writes: someone else's file, which the spool must leave alone.
    (spool / FOREIGN_FILE).write_bytes(data)
    for name, content in planted.items():
        path = spool / name
        path.write_bytes(content)
        path.chmod(0o600)
    return sorted(planted)


def test_kill_9_while_spooling_then_a_fresh_process_drains(
    processes: list[subprocess.Popen[bytes]], ingest: DevIngest, tmp_path: Path
) -> None:
    """SIGKILL at random moments of continuous spooling, 5 times: every intact batch delivered once."""
    spool = tmp_path / "spool"
    ingest.stop()  # the port refuses connections: everything goes to the spool
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    kill_after = []
    for round_ in range(KILL_ROUNDS):
        kill_after.append(round(rng.uniform(0.05, 1.0), 3))
        writer = kill_while_spooling(processes, spool, ingest.base_url, round_, kill_after[-1], tmp_path)
    random_kill_leftovers = read_spool(spool)
    destination = destination_dir(spool)
    plant_kill_leftovers(destination, dead_pid=writer.pid)
    left = read_spool(spool)
    planted = plant_corrupt_batches(destination, left.batches)
    expected = item_numbers(left.events())

    ingest.start()
    started = time.monotonic()
    drainer = spawn(
        processes,
        ["drain", "--spool", str(spool), "--url", ingest.base_url, "--duration", "40"],
        tmp_path / "drain.log",
    )
    try:
        drainer.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail("the drain did not finish within 60 s")
    drain_seconds = time.monotonic() - started
    output = (tmp_path / "drain.log").read_text()
    assert drainer.returncode == 0, output
    figures = counters_of(output)
    arrived = item_numbers(ingest.events())
    remaining = spool_files(spool)
    summary(
        "kill-9-spool",
        seed=seed,
        rounds=KILL_ROUNDS,
        kill_after_s=kill_after,
        intact_batches=len(left.batches),
        leased_by_killed=len(random_kill_leftovers.leased),
        temp_files_by_killed=len(random_kill_leftovers.temporary),
        planted_dead_lease_and_temp=2,
        corrupt_from_kills=len(left.corrupt),
        planted_corrupt=len(planted),
        expected_events=sum(expected.values()),
        arrived=sum(arrived.values()),
        lost=len(set(expected) - set(arrived)),
        duplicated=sum(count - 1 for count in arrived.values() if count > 1),
        corrupt_removed=figures["spool"]["corrupt_removed"],
        recovered_batches=figures["spool"]["recovered"],
        drain_s=f"{figures['seconds']:.1f}",
        process_s=f"{drain_seconds:.1f}",
        left_in_spool=len(remaining),
    )
    assert left.corrupt == [], "a kill left a batch file that is not intact"
    assert max(expected.values()) == 1, "an event was spooled twice"
    assert arrived == expected, "every intact batch delivered exactly once, nothing else"
    assert arrival_order(ingest.events()) == arrival_order(left.events()), "replayed oldest first"
    assert figures["spool"]["corrupt_removed"] == len(planted)
    assert figures["spool"]["recovered"] == len(left.batches)
    assert remaining == [FOREIGN_FILE], "partial and corrupt files are removed, a foreign one stays"
    assert ingest.stats()["batches_rejected"] == 0


# -- 7. bad input over raw sockets -----------------------------------------------------------------

PROBE_SERVERS = {
    "uvicorn": UVICORN,
    # One worker: it has booted by the time it answers, so SIGTERM never meets a worker still
    # booting with the arbiter's signal handlers (which ignores it until the graceful timeout).
    "gunicorn": [
        "gunicorn",
        "--workers",
        "1",
        "--bind",
        "127.0.0.1:{port}",
        "--no-control-socket",
        "load_flask:app",
    ],
}
PROBE_CONSUMER = re.compile(r"probe-(\d+)-")


def probe(
    launch: Launch,
    ingest: DevIngest,
    tmp_path: Path,
    server_name: str,
    semconv: str | None,
    probes: list[RawProbe],
) -> tuple[dict[int, RawAnswer], dict[int, list[dict[str, Any]]]]:
    """Send each probe on its own connection, then SIGTERM; the answers and the events by probe."""
    env = beacon_env(ingest.base_url, tmp_path / "spool", OTEL_SEMCONV_STABILITY_OPT_IN=semconv)
    server = launch(PROBE_SERVERS[server_name], env)
    answers = {index: send_raw(server.port, p.request(index)) for index, p in enumerate(probes)}
    terminate_timed(server)  # the shutdown flush delivers (or drops and counts) everything
    events: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in ingest.events():
        match = PROBE_CONSUMER.match(event["consumer"] or "")
        assert match, event
        events[int(match[1])].append(event)
    return answers, events


@pytest.mark.parametrize("semconv", [None, "http"], ids=["old-semconv", "stable-semconv"])
@pytest.mark.parametrize("server_name", ["uvicorn", "gunicorn"])
def test_bad_input_yields_contract_valid_events(
    launch: Launch, ingest: DevIngest, tmp_path: Path, server_name: str, semconv: str | None
) -> None:
    """Oversized, malformed and odd requests: each one the app sees becomes one valid event."""
    answers, events = probe(launch, ingest, tmp_path, server_name, semconv, BAD_INPUT)
    by_app = {index for index, answer in answers.items() if answer.by_app}
    stats = ingest.stats()
    methods = {BAD_INPUT[i].name: events[i][0]["method"] for i in by_app if events.get(i)}
    summary(
        f"bad-input-{server_name}-{semconv or 'old'}",
        probes=len(BAD_INPUT),
        seen_by_app=len(by_app),
        refused_by_server=sorted(BAD_INPUT[i].name for i in answers if i not in by_app),
        events=sum(len(found) for found in events.values()),
        ingest_rejected=stats["batches_rejected"],
        methods=methods,
    )
    assert stats["batches_rejected"] == 0, [format_rejection(r) for r in stats["rejections"]]
    assert {i: len(found) for i, found in events.items()} == dict.fromkeys(by_app, 1)
    for index in by_app:
        event = events[index][0]
        assert validate_event(event) == [], (BAD_INPUT[index].name, event)
        assert len(event["path"]) <= 4096 and len(event["route"]) <= 2048, BAD_INPUT[index].name
        assert event["consumer"] is not None and len(event["consumer"]) <= 256
    # The probes every server must pass to the app, whatever it refuses.
    must_serve = {"2k-api-key", "non-utf8-api-key", "pct-control", "pct-invalid-utf8", "purge", "3k-query"}
    assert must_serve <= {BAD_INPUT[i].name for i in by_app}, answers


@pytest.mark.parametrize("server_name", ["uvicorn", "gunicorn"])
def test_encoded_question_mark_in_path_does_not_poison_its_batch(
    launch: Launch, ingest: DevIngest, tmp_path: Path, server_name: str
) -> None:
    """'/items/a%3Fb' under stable semconv: one valid event, and the events batched with it arrive."""
    probes = [
        RawProbe("before", b"GET /items/1 HTTP/1.1\r\n"),
        RawProbe("pct-question-mark", b"GET /items/a%3Fb HTTP/1.1\r\n"),
        RawProbe("after", b"GET /items/2 HTTP/1.1\r\n"),
    ]
    answers, events = probe(launch, ingest, tmp_path, server_name, "http", probes)
    stats = ingest.stats()
    summary(
        f"pct-3F-{server_name}-stable",
        seen_by_app=sum(1 for answer in answers.values() if answer.by_app),
        events=sum(len(found) for found in events.values()),
        ingest_rejected=stats["batches_rejected"],
        problems=[p["problem"] for r in stats["rejections"] for p in r.get("problems", [])],
    )
    assert all(answer.by_app for answer in answers.values()), answers
    assert stats["batches_rejected"] == 0, [format_rejection(r) for r in stats["rejections"]]
    assert {i: len(found) for i, found in events.items()} == {0: 1, 1: 1, 2: 1}
    assert events[1][0]["path"] in ("/items/a%3Fb", "/items/a%3fb")


# -- 6b. a long outage: full batches to disk while backing off ------------------------------------


def test_long_outage_spools_full_batches_while_backing_off(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Past six failures, full batches go to the spool as they fill: none fall out of the buffer."""
    log = tmp_path / "writer.log"
    writer = spawn(
        processes,
        [
            *("write", "--spool", str(tmp_path / "spool"), "--url", f"http://127.0.0.1:{free_port()}"),
            # 2 s waits stand in for the 30 s cap; a 200-event buffer for 10,000 at a higher rate.
            *("--rate", "500", "--batch-size", "10", "--max-buffer", "200", "--backoff", "2"),
            *("--duration", "5"),
        ],
        log,
    )
    try:
        writer.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the writer did not finish: {log.read_text()}")
    figures = counters_of(log.read_text())
    delivery = figures["delivery"]
    summary(
        "long-outage-spooling",
        generated=figures["generated"],
        spooled=delivery["spooled"],
        in_memory=figures["buffered"],
        dropped=delivery["dropped"],
        spool_writes=figures["spool"]["written"],
    )
    assert delivery["dropped_total"] == 0, delivery
    assert delivery["spooled"] + figures["buffered"] == figures["generated"]


# -- 7. an 8 s outage under a burst, with a small memory buffer ---------------------------------------

BURST_REQUESTS = 3000


def test_burst_during_an_eight_second_outage_all_arrives(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """3,000 requests as fast as they come, buffer 500, ingest down 8 s: memory, then disk, all arrive.

    All but what the counters say was dropped. The delivery thread gets the GIL back after each
    system call only when a saturated event loop lets go of it, so a spool write can take 50 to
    130 ms here; 500 events are 0.25 s of this burst. When the machine starves the thread longer,
    memory fills before its batches reach the disk: the request thread never waits for the disk,
    so those events are dropped, counted and said in the log.
    """
    spool = tmp_path / "spool"
    env = beacon_env(ingest.base_url, spool, BEACON_MAX_BUFFER_SIZE="500", BEACON_BATCH_SIZE="50")
    server = launch(UVICORN, env)
    assert server.process is not None
    peak_spool = 0
    with RssSampler(server.process.pid) as rss:
        rss.phase = "during"
        ingest.stop()
        down_at = time.monotonic()
        load = Load(server.port, rate=2000, threads=4, max_requests=BURST_REQUESTS).start()
        while time.monotonic() - down_at < 8.0:
            peak_spool = max(peak_spool, spool_bytes(spool))
            time.sleep(0.1)
        ingest.start()
        load.drain(120)
        served = load.ok()

        def settled() -> dict[str, Any] | None:
            """Beacon's counters once memory and spool are empty and every event is accounted for."""
            figures = get_json(server.port, "/_beacon/stats")
            delivery = figures["delivery"]
            arrived = len(set(item_numbers(ingest.events())) & served)
            done = figures["buffered"] == 0 and delivery["recovered"] == delivery["spooled"]
            return figures if done and arrived + delivery["dropped_total"] >= len(served) else None

        try:
            stats = wait_until(settled, 90, "every served request delivered or counted dropped")
        except pytest.fail.Exception:
            missing = served - set(item_numbers(ingest.events()))
            pytest.fail(
                f"{len(missing)} of {len(served)} served requests never arrived; "
                f"Beacon says {get_json(server.port, '/_beacon/stats')}; "
                f"spool {sorted(str(p.relative_to(spool)) for p in spool.rglob('*'))}; "
                f"ingest {ingest.stats()}; server log:\n{server.log()[-4000:]}"
            )
    exit_seconds = terminate_timed(server)
    result = tally(served, item_numbers(ingest.events()), load.attempted)
    delivery = stats["delivery"]
    summary(
        "burst-8s",
        served=result.served,
        rate=f"{load.achieved_rate():.0f}/s",
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        spooled=delivery["spooled"],
        recovered=delivery["recovered"],
        dropped=delivery["dropped"],
        rss_peak_mib=f"{rss.peak_mib('during'):.0f}",
        peak_spool_bytes=peak_spool,
        exit_s=f"{exit_seconds:.2f}",
    )
    assert len(served) == BURST_REQUESTS and load.failures == {}, load.failures
    assert (result.duplicated, result.unexpected) == (0, 0), result
    # Nothing missing that the counters do not name, and never more than a sliver of the burst.
    assert result.lost == delivery["dropped_total"] == delivery["dropped"].get("buffer_full", 0), delivery
    assert result.lost <= BURST_REQUESTS // 20, delivery
    if result.lost:
        assert "Beacon events dropped: the memory buffer filled" in server.log()
    assert delivery["spooled"] >= BURST_REQUESTS // 2, "a burst larger than memory went to disk"
    assert ingest.stats()["batches_rejected"] == 0


def spool_bytes(root: Path) -> int:
    """Bytes of every file under a spool root right now."""
    total = 0
    for path in root.rglob("*") if root.is_dir() else []:
        with contextlib.suppress(OSError):
            total += path.stat().st_size if path.is_file() else 0
    return total


# -- 8. two destinations sharing a host and a spool directory ------------------------------------------


def test_two_destinations_never_replay_each_others_batches(launch: Launch, tmp_path: Path) -> None:
    """Two apps, two ingests on one host, one spool root: each batch reaches only its own ingest."""
    spool = tmp_path / "spool"
    with DevIngest() as ingest_a, DevIngest() as ingest_b:
        env_a = beacon_env(ingest_a.base_url, spool, BEACON_INGEST_KEY="key-of-a")
        env_b = beacon_env(ingest_b.base_url, spool, BEACON_INGEST_KEY="key-of-b")
        ingest_a.stop()
        ingest_b.stop()
        app_a, app_b = launch(UVICORN, env_a), launch(UVICORN, env_b)
        served_a = Load(app_a.port, rate=100, threads=1, max_requests=200).drain(30).ok()
        served_b = Load(app_b.port, rate=100, threads=1, first=1_000_000, max_requests=200).drain(30).ok()
        terminate_timed(app_a)
        terminate_timed(app_b)
        on_disk = sorted(path.name for path in spool.iterdir() if path.is_dir())
        assert not any("key-of" in path.name for path in spool.rglob("*")), "the key is not a name"

        # Only A comes back, with both ingests up: A's batches only, B's stay on disk.
        ingest_a.start()
        ingest_b.start()
        restarted_a = launch(UVICORN, env_a)
        wait_until(lambda: set(item_numbers(ingest_a.events())) >= served_a, 30, "A's spooled events")
        hold(2.0)  # B's batches would have been replayed by now, had A taken them
        left_for_b = sum(1 for d in destinations(spool) if d.batches > 0)
        b_before_b = len(ingest_b.events())
        terminate_timed(restarted_a)
        restarted_b = launch(UVICORN, env_b)
        wait_until(lambda: set(item_numbers(ingest_b.events())) >= served_b, 30, "B's spooled events")
        terminate_timed(restarted_b)
        at_a, at_b = item_numbers(ingest_a.events()), item_numbers(ingest_b.events())
    crossed = len(set(at_a) & served_b) + len(set(at_b) & served_a)
    summary(
        "two-destinations",
        served_a=len(served_a),
        served_b=len(served_b),
        destinations=len(on_disk),
        arrived_a=sum(at_a.values()),
        arrived_b=sum(at_b.values()),
        crossed=crossed,
        b_waiting_while_only_a_ran=left_for_b,
    )
    assert len(on_disk) == 2
    assert (b_before_b, left_for_b) == (0, 1), "A replayed nothing of B's"
    assert crossed == 0
    assert set(at_a) == served_a and set(at_b) == served_b
    assert max(at_a.values()) == 1 and max(at_b.values()) == 1


# -- 9. a 60 s outage at a high rate (opt-in: BEACON_LONG_FAULTS=1, it takes two minutes) -------------


@pytest.mark.skipif(not os.environ.get("BEACON_LONG_FAULTS"), reason="set BEACON_LONG_FAULTS=1 to run")
def test_sixty_second_outage_at_a_high_rate_all_arrives(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Ingest down 60 s under as much traffic as the machine serves: memory, then disk, all arrive."""
    spool = tmp_path / "spool"
    server = launch(UVICORN, beacon_env(ingest.base_url, spool, BEACON_MAX_BUFFER_SIZE="1000"))
    assert server.process is not None
    peak_spool = 0
    with RssSampler(server.process.pid) as rss:
        rss.phase = "during"
        ingest.stop()
        down_at = time.monotonic()
        load = Load(server.port, rate=2000, threads=4).start()
        while time.monotonic() - down_at < 60.0:
            peak_spool = max(peak_spool, spool_bytes(spool))
            time.sleep(0.2)
        load.stop()
        ingest.start()
        back_at = time.monotonic()
        served = load.ok()
        wait_until(lambda: set(item_numbers(ingest.events())) >= served, 180, "every served request")
        caught_up = time.monotonic() - back_at
        stats = stats_when_idle(server.port)
    terminate_timed(server)
    result = tally(served, item_numbers(ingest.events()), load.attempted)
    delivery = stats["delivery"]
    lines = [line for line in server.log().splitlines() if "beacon-otel" in line]
    summary(
        "outage-60s",
        served=result.served,
        rate=f"{load.achieved_rate():.0f}/s",
        arrived=result.arrived,
        lost=result.lost,
        duplicated=result.duplicated,
        spooled=delivery["spooled"],
        recovered=delivery["recovered"],
        dropped=delivery["dropped"],
        rss_peak_mib=f"{rss.peak_mib('during'):.0f}",
        peak_spool_bytes=peak_spool,
        caught_up_s=f"{caught_up:.1f}",
        log_lines=len(lines),
    )
    print("\n".join(lines))
    assert load.failures == {}, load.failures
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert delivery["dropped_total"] == 0, delivery
    assert len(lines) <= 6, lines  # start, first failure, one a minute, recovery, summary
