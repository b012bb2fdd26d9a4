"""The delivery thread's HTTP request and its work per event, in instructions over every thread.

Two measurements, each in a child process run under callgrind with every thread counted (the
request deadline's timer or watchdog runs on a thread of its own, so counting the calling thread
alone, as :mod:`bench.harness.instructions` does, would miss it):

- ``clients``: client instructions per POST of one 100-event batch to the accept-anything sink
  over a keep-alive connection, for Beacon's transport as it is and for bare ``requests``,
  ``urllib3`` and ``http.client`` doing the same POST (no deadline). Each client is counted
  twice, with ``POSTS`` requests and with none, in separate processes; the difference over
  ``POSTS`` is its cost per POST, set-up and exit excluded. Also timed (process CPU, every
  thread, median of rounds) for a figure in microseconds.
- ``delivery``: the production worker, transport and dev ingest: ``EVENTS`` pre-built events
  submitted from the main thread, then flushed. Callgrind counts each thread apart
  (``--separate-threads=yes``); everything but the main thread, over the events, is the
  delivery side's work per event, its HTTP requests included.

``python -m bench.scenarios.posting [clients|delivery|timed]`` prints the figures.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.harness import instructions, services

POSTS = 100
EVENTS = 2_000
CLIENTS = ("beacon", "requests", "urllib3", "http.client")


def _body() -> bytes:
    from beacon_otel.contract.event import encode_batch
    from bench.scenarios.export import sample_events

    return encode_batch(sample_events(100))


def _poster(client: str, base_url: str) -> Any:
    """A function doing one POST of the batch body with ``client``; raises on anything but 2xx."""
    from urllib.parse import urlsplit

    url = base_url + "/v1/ingest"
    body = _body()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "bench",
        "Authorization": "Bearer bench-key",
        "Idempotency-Key": "0" * 32,
    }
    if client == "beacon":
        from beacon_otel.delivery.transports.http import IngestTransport

        transport = IngestTransport(url=url, key="bench-key", timeout=5.0)

        def post() -> None:
            outcome = transport.send(body, "0" * 32)
            assert outcome.status == 200, outcome

        return post
    if client == "requests":
        import requests

        session = requests.Session()

        def post() -> None:
            response = session.post(url, data=body, headers=headers, timeout=5.0)
            response.content  # noqa: B018 - read the reply, as the transport does
            assert response.status_code == 200

        return post
    parts = urlsplit(url)
    if client == "urllib3":
        import urllib3

        pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, maxsize=1, retries=False, timeout=5.0)

        def post() -> None:
            response = pool.urlopen("POST", parts.path, body=body, headers=headers, redirect=False)
            assert response.status == 200

        return post
    import http.client

    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5.0)

    def post() -> None:
        connection.request("POST", parts.path, body, headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200

    return post


def client_child(client: str, base_url: str, posts: int) -> None:
    """Warm up, start counting, ``posts`` POSTs, and leave at once (no interpreter teardown)."""
    post = _poster(client, base_url)
    for _ in range(20):
        post()
    instructions.start()
    for _ in range(posts):
        post()
    sys.stdout.flush()
    os._exit(0)


def timed_child(client: str, base_url: str, posts: int) -> None:
    """Process CPU (every thread) per POST, in microseconds, as the last line."""
    post = _poster(client, base_url)
    for _ in range(20):
        post()
    cpu = time.process_time()
    for _ in range(posts):
        post()
    print(json.dumps((time.process_time() - cpu) / posts * 1e6))


def delivery_child(base_url: str, events: int) -> None:
    """The production worker and transport; flush; leave at once."""
    from beacon_otel import BeaconConfig, BeaconSpanProcessor
    from bench.scenarios.export import sample_events

    config = BeaconConfig(ingest_key="bench-ingest-key", ingest_url=base_url, max_buffer_size=max(events * 2, 100))
    processor = BeaconSpanProcessor(config)
    worker = processor._worker
    batch = sample_events(events)
    for event in batch[:200]:
        worker.submit(event)
    assert processor.force_flush(60_000)
    instructions.start()
    for event in batch:
        worker.submit(event)
    assert processor.force_flush(60_000)
    assert processor.stats.snapshot()["sent"] == events + 200, processor.stats.snapshot()
    sys.stdout.flush()
    os._exit(0)


def _callgrind(args: list[str], separate: bool) -> dict[int, int]:
    """Instructions per thread (1 is the main thread) of ``python -m bench.scenarios.posting args``."""
    directory = tempfile.mkdtemp(prefix="bench-posting-")
    try:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--separate-threads={'yes' if separate else 'no'}",
                f"--callgrind-out-file={directory}/out",
                sys.executable,
                "-m",
                "bench.scenarios.posting",
                *args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=1800,
        )
        totals = {}
        for path in glob.glob(f"{directory}/out-*" if separate else f"{directory}/out"):
            thread = int(path.rsplit("-", 1)[1]) if separate else 1
            with open(path) as profile:
                for line in profile:
                    if line.startswith(("summary:", "totals:")):
                        totals[thread] = int(line.split()[1])
                        break
        return totals
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def clients() -> dict[str, float]:
    """Instructions per POST, every thread, for each client."""
    result = {}
    with services.running(services.sink()) as (sink,):
        for client in CLIENTS:
            with_posts = sum(_callgrind(["client", client, sink.base_url, str(POSTS)], False).values())
            without = sum(_callgrind(["client", client, sink.base_url, "0"], False).values())
            result[client] = (with_posts - without) / POSTS
            print(f"  {client}: {result[client]:,.0f} instructions per POST", flush=True)
    return result


def timed(rounds: int = 5, posts: int = 2000) -> dict[str, float]:
    """Process CPU per POST (us, every thread), median of interleaved rounds."""
    runs: dict[str, list[float]] = {client: [] for client in CLIENTS}
    with services.running(services.sink()) as (sink,):
        for _ in range(rounds):
            for client in CLIENTS:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.scenarios.posting",
                        "timed-child",
                        client,
                        sink.base_url,
                        str(posts),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[client].append(json.loads(out.strip().splitlines()[-1]))
    result = {client: statistics.median(values) for client, values in runs.items()}
    for client, values in runs.items():
        print(
            f"  {client}: {result[client]:.0f} us per POST (rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )
    return result


def delivery() -> dict[str, float]:
    """Instructions per event off the main thread (the delivery thread and any thread it starts)."""
    with services.running(services.dev_ingest()) as (ingest,):
        threads = _callgrind(["delivery-child", ingest.base_url, str(EVENTS)], True)
    main_thread = threads.pop(1, 0)
    off_main = sum(threads.values())
    result = {
        "per_event_off_main": off_main / EVENTS,
        "threads": len(threads),
        "per_event_main (submit)": main_thread / EVENTS,
    }
    print(json.dumps(result))
    return result


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "clients"
    if command == "client":
        client_child(argv[1], argv[2], int(argv[3]))
    elif command == "timed-child":
        timed_child(argv[1], argv[2], int(argv[3]))
    elif command == "delivery-child":
        delivery_child(argv[1], int(argv[2]))
    elif command == "clients":
        clients()
    elif command == "timed":
        timed()
    elif command == "delivery":
        delivery()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
