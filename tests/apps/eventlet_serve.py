"""``python eventlet_serve.py PORT``: green_https_app under eventlet's own WSGI server.

gunicorn 27 has no eventlet worker any more; this does what it did: patch when the worker
starts (after ``opentelemetry-instrument`` ran), then import the app and serve it.
"""

from __future__ import annotations

import sys

import eventlet

eventlet.monkey_patch()

from eventlet import wsgi  # noqa: E402 - after the patch, as in a green worker
from green_https_app import app  # noqa: E402

wsgi.server(eventlet.listen(("127.0.0.1", int(sys.argv[1]))), app, log_output=False)
