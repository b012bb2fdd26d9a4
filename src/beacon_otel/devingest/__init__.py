"""Local dev ingest: a Beacon ingest server that validates as strictly as the contract.

The modules, one concern each:

- ``server``: DevIngest, the object tests and the CLI drive (start/stop, stored events,
  summary, stats, fault script, waiting for events);
- ``reception``: what the ingest answers to each POST (a scripted fault, or the contract's
  verdict) and what it records: arrivals, rejections, counters, the fault script;
- ``httpd``: the HTTP server and request handler that answer for a DevIngest;
- ``access``: who may use it beside a browser (its own Host and Origin, JSON test calls, the
  key beyond loopback);
- ``store``: the SQLite store of accepted events, each Idempotency-Key stored once;
- ``validation``: the contract's checks of a request, its body and each event, each bounded;
- ``summary``: what the stored events add up to (per route, errors, validation fields, charts);
- ``summaries``: the running summary of each filter, caught up from the store when asked;
- ``table``: the same, and single events, as terminal text;
- ``terminal``: the one sanitiser for every terminal or log line;
- ``dashboard``: the live page at ``/``, a static asset drawing GET /v1/summary;
- ``faults``: Fault, one scripted misbehaviour for client tests.
"""

from __future__ import annotations

from beacon_otel.devingest.faults import Fault
from beacon_otel.devingest.httpd import INGEST_PATH as INGEST_PATH
from beacon_otel.devingest.server import DevIngest, IngestTimeout
from beacon_otel.devingest.summary import Filters
from beacon_otel.devingest.table import format_event, format_events, format_rejection, format_summary
from beacon_otel.devingest.validation import MAX_BODY_BYTES as MAX_BODY_BYTES
from beacon_otel.devingest.validation import MAX_PROBLEMS as MAX_PROBLEMS
from beacon_otel.devingest.validation import Problem as Problem
from beacon_otel.devingest.validation import validate_event

__all__ = [
    "DevIngest",
    "Fault",
    "Filters",
    "IngestTimeout",
    "format_event",
    "format_events",
    "format_rejection",
    "format_summary",
    "validate_event",
]
