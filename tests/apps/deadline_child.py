"""One transport's request deadline across a fork, or once gevent has patched, against a trickling ingest.

``python deadline_child.py fork|gevent|gevent-after-fork URL``: the ingest at ``URL`` answers its
first request at once and trickles every later reply. The transport (timeout 1 s) sends once, so
its watchdog runs, then:

- ``fork``: the process forks; the child sends on the inherited transport, then the parent sends.
- ``gevent``: patched before the transport is made; the second send runs while a greenlet ticks.
- ``gevent-after-fork``: gunicorn's gevent worker with ``--preload``: the process forks, the child
  resets the transport as the delivery worker's at-fork hook does (its primitives are made before
  the patch), patches, and sends while a greenlet ticks.

Prints the outcomes (and the greenlet's ticks) as JSON, one object per line; a request the
deadline did not bound shows as the test's timeout.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

mode, url = sys.argv[1], sys.argv[2]
TIMEOUT = 1.0

if mode == "gevent":
    from gevent import monkey

    monkey.patch_all()

from beacon_otel.delivery.transports.http import IngestTransport  # noqa: E402 - after the patch, or not


def described(outcome: Any, **more: Any) -> str:
    return json.dumps({"verdict": outcome.verdict.name, "kind": getattr(outcome.kind, "name", None), **more})


transport = IngestTransport(url=url, key="k", timeout=TIMEOUT)
first = transport.send(b'{"events":[]}', "first")
assert first.status == 202, first

if mode == "fork":
    pid = os.fork()
    if pid == 0:
        print(described(transport.send(b'{"events":[]}', "child"), process="child"), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print(described(transport.send(b'{"events":[]}', "parent"), process="parent"), flush=True)
    transport.close()
    sys.exit(0)

if mode == "gevent-after-fork":
    pid = os.fork()
    if pid != 0:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    transport.reset()  # what the delivery worker's at-fork hook does, before the worker patches
    from gevent import monkey

    monkey.patch_all()

import gevent  # noqa: E402

ticks = 0
done = False


def tick() -> None:
    global ticks
    while not done:
        gevent.sleep(0.05)
        ticks += 1


ticker = gevent.spawn(tick)
outcome = transport.send(b'{"events":[]}', "green")
done = True
ticker.join()
print(described(outcome, ticks=ticks), flush=True)
transport.close()
if mode == "gevent-after-fork":
    os._exit(0)
