"""The beacon-otel command line."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import sqlite3
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from beacon_otel.devingest import INGEST_PATH, DevIngest, format_rejection, format_summary
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
        "contract, stores accepted events in SQLite and prints one line per batch.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    dev.add_argument(
        "--port", type=int, default=DEFAULT_DEV_INGEST_PORT, help="0 picks a free port (%(default)s)"
    )
    dev.add_argument("--db", default="beacon-dev.sqlite3", help="SQLite file, or :memory:")
    dev.add_argument("--key", help="accept only this ingest key (default: any non-empty key)")
    dev.add_argument("--quiet", action="store_true", help="do not print a line per batch")
    dev.set_defaults(run=_run_dev_ingest)

    summary = commands.add_parser(
        "summary",
        help="print the per-route summary of a running dev ingest",
        description="Print a running dev ingest's per-route summary; exit 1 if it rejected "
        "any batch, 2 if it cannot be reached.",
    )
    summary.add_argument(
        "--url",
        default=f"http://127.0.0.1:{DEFAULT_DEV_INGEST_PORT}",
        help="the dev ingest's base URL or ingest endpoint (%(default)s)",
    )
    summary.set_defaults(run=_run_summary)
    return parser


def _run_dev_ingest(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()
    log = None if args.quiet else _print_flushed
    ingest = DevIngest(args.host, args.port, args.db, args.key, log=log)
    # Installed before binding, so a signal that comes early still ends us cleanly.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    try:
        try:
            ingest.start()
        except (OSError, sqlite3.Error) as exc:
            print(f"beacon-otel dev-ingest: cannot start: {exc}", file=sys.stderr)
            return 1
        # Scripts and tests parse this line to learn the port, so flush it right away.
        _print_flushed(f"Beacon dev ingest listening on {ingest.url}")
        if stored := ingest.stats()["events_stored"]:
            _print_flushed(f"({stored} events from earlier runs are in {args.db})")
        stop.wait()
        return 0
    finally:
        ingest.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_summary(args: argparse.Namespace) -> int:
    """Print the summary table and batch counts of a running dev ingest."""
    base_url = args.url.strip().rstrip("/").removesuffix(INGEST_PATH)
    try:
        summary, stats = _get_json(base_url + "/v1/summary"), _get_json(base_url + "/v1/stats")
    except (OSError, ValueError) as exc:  # URLError is an OSError, bad JSON a ValueError
        print(f"beacon-otel summary: cannot read {base_url}: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"batches accepted: {stats['batches_accepted']}, rejected: {stats['batches_rejected']}")
    for rejection in stats["rejections"][-3:]:
        print("  " + format_rejection(rejection))
    return 1 if stats["batches_rejected"] else 0


def _get_json(url: str) -> Any:
    """GET a JSON document over plain HTTP(S)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    with urllib.request.urlopen(url, timeout=10) as response:
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
