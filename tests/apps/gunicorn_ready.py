"""gunicorn settings for the tests: each worker leaves a marker once its app is loaded.

A worker still booting when SIGTERM arrives makes gunicorn wait out its graceful timeout, so
the tests wait for every marker before they stop a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def post_worker_init(worker: Any) -> None:
    ready = os.environ.get("TEST_GUNICORN_READY_DIR")
    if ready:
        (Path(ready) / f"worker-{os.getpid()}").touch()
