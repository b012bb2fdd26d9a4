"""The beacon-otel command line."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import sqlite3
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from beacon_otel.devingest import INGEST_PATH, DevIngest, format_event, format_rejection, format_summary
from beacon_otel.doctor.diagnose import PROBE_ROUTE, diagnose, report
from beacon_otel.version import __version__

# Not 4318: that is the OTLP/HTTP port, where people already run collectors.
DEFAULT_DEV_INGEST_PORT = 8390
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the beacon-otel command line and return its exit code."""
    args = _parser().parse_args(argv)
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    """Build the parser; each subcommand sets `run`, the function that carries it out."""
    parser = argparse.ArgumentParser(prog="beacon-otel", description="Beacon API analytics tools.")
    parser.add_argument("--version", action="version", version=_version_line())
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    dev = commands.add_parser(
        "dev-ingest",
        help="run a local Beacon ingest that validates every batch strictly",
        description="Serve a local Beacon ingest that validates every batch as strictly as the "
        "contract, stores accepted events in SQLite and prints one line per batch. Its live "
        "dashboard is at the same address (http://127.0.0.1:8390/ by default). Endpoints: POST "
        "/v1/ingest (the contract's), GET / (the dashboard), GET /v1/events (stored events, "
        "?offset=N, ?limit=N), GET /v1/summary (per-route figures, ?consumer=NAME, ?status=4xx), "
        "GET /v1/stats (batches accepted, rejected, repeated), GET /healthz; for client tests POST "
        "and GET /v1/_faults, GET /v1/_arrivals, POST /v1/_reset. Point an app at it with "
        "BEACON_INGEST_KEY=dev BEACON_INGEST_URL=http://127.0.0.1:8390.",
        epilog="Then: beacon-otel tail (events as they arrive), beacon-otel summary (per route), "
        "beacon-otel doctor (check a setup).",
    )
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    dev.add_argument(
        "--port", type=int, default=DEFAULT_DEV_INGEST_PORT, help="0 picks a free port (%(default)s)"
    )
    dev.add_argument(
        "--db",
        default="beacon-dev.sqlite3",
        help="SQLite file that keeps events across runs, in the current directory by default; "
        ":memory: keeps nothing after exit (%(default)s)",
    )
    dev.add_argument(
        "--key",
        help="accept only this ingest key (default: any non-empty key); required beyond loopback, "
        "where reads, faults and resets need it too",
    )
    dev.add_argument("--quiet", action="store_true", help="do not print a line per batch")
    dev.set_defaults(run=_run_dev_ingest)

    summary = commands.add_parser(
        "summary",
        help="print the per-route summary of a running dev ingest",
        description="Print a running dev ingest's per-route summary; exit 1 if it rejected "
        "any batch, 2 if it cannot be reached.",
    )
    default_url = f"http://127.0.0.1:{DEFAULT_DEV_INGEST_PORT}"
    summary.add_argument(
        "--url", default=default_url, help="the dev ingest's base URL or ingest endpoint (%(default)s)"
    )
    summary.add_argument("--key", help="the dev ingest's key, when it listens beyond loopback")
    summary.add_argument("--consumer", help="only this consumer's requests ('-' for none)")
    summary.add_argument("--status", choices=("2xx", "3xx", "4xx", "5xx"), help="only this status class")
    summary.set_defaults(run=_run_summary)

    tail = commands.add_parser(
        "tail",
        help="print events as a running dev ingest receives them, one line each",
        description="Follow a running dev ingest: one line per event it stores (status and errors "
        "in colour on a terminal) until interrupted; exit 2 if it cannot be reached.",
    )
    tail.add_argument("--url", default=default_url, help="the dev ingest's base URL (%(default)s)")
    tail.add_argument("--key", help="the dev ingest's key, when it listens beyond loopback")
    tail.add_argument(
        "-n", "--lines", type=int, default=10, help="start with the last N events (%(default)s)"
    )
    tail.add_argument("--interval", type=float, default=0.5, help="seconds between polls (%(default)s)")
    tail.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour output (%(default)s)"
    )
    tail.set_defaults(run=_run_tail)

    doctor = commands.add_parser(
        "doctor",
        help="check that this environment would send Beacon events, and say what to fix",
        description="Read the configuration as opentelemetry-instrument would and check it: settings "
        "(the key shown as a fingerprint), the ingest URL and its addresses, whether the ingest "
        "answers and accepts the key (an empty batch, which stores nothing), instrumentations, "
        "double SERVER spans, the OTLP exporter and the spool. Exit 0 only when nothing needs fixing.",
    )
    doctor.add_argument(
        "--send-test-event",
        action="store_true",
        help=f"send one real event (route {PROBE_ROUTE}) instead of an empty batch; it is stored",
    )
    doctor.set_defaults(run=_run_doctor)

    spool_deliver = commands.add_parser(
        "spool-deliver",
        help="send the batches spooled for BEACON_INGEST_URL and BEACON_INGEST_KEY now",
        description="Send every batch spooled for the destination the BEACON_* settings name "
        "(ingest URL and key), with that key, oldest first: after a key rotation or a new ingest URL, "
        "run it with the earlier key and URL. Exit 0 when the spool is empty, 1 when the ingest "
        "stopped answering (the rest stays spooled), 2 when the settings are invalid.",
    )
    spool_deliver.set_defaults(run=_run_spool_deliver)
    return parser


def _run_dev_ingest(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGINT or SIGTERM."""
    # The handler only appends to a list: a handler that took a lock (Event.set) could run while
    # the main thread, which it interrupts, holds that very lock inside Event.wait, and hang.
    stop_signals: list[int] = []
    log = None if args.quiet else _print_flushed
    try:
        ingest = DevIngest(args.host, args.port, args.db, args.key, log=log)
    except ValueError as exc:
        print(f"beacon-otel dev-ingest: cannot start: {exc}", file=sys.stderr)
        return 1
    # Installed before binding, so a signal that comes early still ends us cleanly.
    previous = {
        sig: signal.signal(sig, lambda signum, _: stop_signals.append(signum)) for sig in _STOP_SIGNALS
    }
    try:
        try:
            ingest.start()
        except (OSError, sqlite3.Error) as exc:
            print(f"beacon-otel dev-ingest: cannot start: {exc}", file=sys.stderr)
            return 1
        # Scripts and tests parse this line to learn the port, so flush it right away.
        _print_flushed(f"Beacon dev ingest listening on {ingest.url}")
        if ingest.beyond_loopback:
            _print_flushed(f"Dashboard: {ingest.base_url}/#key=<ingest key>")
            print(
                f"beacon-otel dev-ingest: warning: listening on {args.host}, beyond loopback: other "
                "machines can reach it; every read, fault and reset needs the key (--key), and it "
                "travels over plain HTTP",
                file=sys.stderr,
                flush=True,
            )
        else:
            _print_flushed(f"Dashboard: {ingest.base_url}/")
        if stored := ingest.stats()["events_stored"]:
            _print_flushed(f"({stored} events from earlier runs are in {args.db})")
        while not stop_signals:
            time.sleep(0.2)
        return 0
    finally:
        ingest.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_summary(args: argparse.Namespace) -> int:
    """Print the summary table and batch counts of a running dev ingest."""
    base_url = _base_url(args.url)
    query = urllib.parse.urlencode(
        {k: v for k, v in (("consumer", args.consumer), ("status", args.status)) if v}
    )
    try:
        summary = _get_json(f"{base_url}/v1/summary?{query}", args.key)
        stats = _get_json(base_url + "/v1/stats", args.key)
    except (OSError, ValueError) as exc:  # URLError is an OSError, bad JSON a ValueError
        print(_unreachable("summary", base_url, exc), file=sys.stderr)
        return 2
    print(format_summary(summary))
    print()
    print(
        f"batches accepted: {stats['batches_accepted']}, rejected: {stats['batches_rejected']}, "
        f"repeats not stored again: {stats.get('batches_repeated', 0)}"
    )
    for rejection in stats["rejections"][-3:]:
        print("  " + format_rejection(rejection))
    print(f"dashboard: {base_url}/")
    return 1 if stats["batches_rejected"] else 0


def _run_tail(args: argparse.Namespace) -> int:
    """Poll the dev ingest for new events and print each on one line, until interrupted."""
    base_url = _base_url(args.url)
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    try:
        seen = max(0, int(_get_json(base_url + "/v1/stats", args.key)["events_stored"]) - max(args.lines, 0))
        print(f"following {base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while True:
            stored = int(_get_json(base_url + "/v1/stats", args.key)["events_stored"])
            if stored < seen:  # the ingest was reset or restarted with another --db
                seen = 0
            new = _get_json(f"{base_url}/v1/events?offset={seen}", args.key) if stored > seen else []
            for event in new:
                _print_flushed(format_event(event, colour=colour))
                seen += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(_unreachable("tail", base_url, exc), file=sys.stderr)
        return 2


def _run_doctor(args: argparse.Namespace) -> int:
    """Print every finding; exit 1 when anything needed is missing."""
    # Set-up's patch sites (uvicorn's shutdown, another distro's load_instrumentor), declared as
    # these modules are imported: the doctor lists them with the frameworks' own.
    from beacon_otel.setup import exits, instrumentors  # noqa: F401

    text, status = report(diagnose(os.environ, send_test_event=args.send_test_event))
    print(f"beacon-otel doctor ({_version_line()})\n")
    print(text)
    return status


def _run_spool_deliver(args: argparse.Namespace) -> int:
    """Send one destination's spooled batches, saying what happened to them."""
    from beacon_otel.config.settings import BeaconConfig, BeaconConfigError
    from beacon_otel.delivery.spool_delivery import deliver_spooled

    try:
        config = BeaconConfig.from_env(os.environ)
    except BeaconConfigError as exc:
        print(f"beacon-otel spool-deliver: {exc}", file=sys.stderr)
        return 2
    result = deliver_spooled(config, _print_flushed)
    print(f"sent {result.sent} events; {result.refused} refused; {result.left} batches left")
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
        return 1
    return 0


def _base_url(url: str) -> str:
    return str(url).strip().rstrip("/").removesuffix(INGEST_PATH)


def _unreachable(command: str, base_url: str, exc: Exception) -> str:
    """Why a command could not read the dev ingest, with what to do about it."""
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket error
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"beacon-otel {command}: no dev ingest is running at {base_url} (connection refused).\n"
            f"Start it with: beacon-otel dev-ingest"
            + (
                f" --port {urllib.parse.urlsplit(base_url).port}"
                if urllib.parse.urlsplit(base_url).port
                else ""
            )
        )
    return f"beacon-otel {command}: cannot read {base_url}: {reason}"


def _get_json(url: str, key: str | None = None) -> Any:
    """GET a JSON document over plain HTTP(S), with the dev ingest's key when given."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.load(response)


def _version_line() -> str:
    """This package's version, with the OpenTelemetry SDK's and Python's that it runs on."""
    try:
        sdk = importlib.metadata.version("opentelemetry-sdk")
    except importlib.metadata.PackageNotFoundError:
        sdk = "not installed"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"beacon-otel {__version__} (opentelemetry-sdk {sdk}, Python {python})"


def _print_flushed(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
