"""Server spans ended by many green threads under gevent or eventlet, patched before or after import.

``python green_requests.py gevent|eventlet before|after``: monkey-patches at the given moment
relative to importing and setting up Beacon (a dry-run processor on its own provider), ends
``REQUESTS`` SERVER spans from concurrent green threads that yield between spans, flushes, and
prints the counters as JSON. A deadlock shows as a timeout, with every thread's stack dumped.
"""

from __future__ import annotations

import faulthandler
import json
import sys

library, moment = sys.argv[1], sys.argv[2]
GREEN_THREADS = 20
REQUESTS_EACH = 15


def patch() -> None:
    if library == "gevent":
        from gevent import monkey

        monkey.patch_all()
    else:
        import eventlet

        eventlet.monkey_patch()


faulthandler.dump_traceback_later(20, exit=True)  # a hang ends the process with every stack
if moment == "before":
    patch()

import threading  # noqa: E402 - the point is where the patch happens
import time  # noqa: E402

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from beacon_otel import BeaconConfig, BeaconSpanProcessor  # noqa: E402

provider = TracerProvider()
processor = BeaconSpanProcessor(BeaconConfig(dry_run=True, batch_size=7, flush_interval=60))
provider.add_span_processor(processor)
tracer = provider.get_tracer("green")

if moment == "after":
    patch()


def serve(worker: int) -> None:
    for n in range(REQUESTS_EACH):
        attributes = {
            "http.method": "GET",
            "http.target": f"/items/{worker}-{n}",
            "http.route": "/items/{n}",
            "http.status_code": 200,
        }
        with tracer.start_as_current_span("GET /items/{n}", kind=SpanKind.SERVER, attributes=attributes):
            pass
        time.sleep(0)  # a green thread yields here, as it would on its socket


threads = [threading.Thread(target=serve, args=(i,)) for i in range(GREEN_THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
flushed = processor.force_flush(10_000)
print(
    json.dumps(
        {
            "flushed": flushed,
            "events": len(processor.dry_run_events()),
            "expected": GREEN_THREADS * REQUESTS_EACH,
            "stats": processor.stats.snapshot(),
        }
    ),
    flush=True,
)
faulthandler.cancel_dump_traceback_later()
