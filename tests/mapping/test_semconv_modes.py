"""The real-framework tests again under the new and the duplicated HTTP semantic conventions.

The instrumentations read OTEL_SEMCONV_STABILITY_OPT_IN once per process, so each mode runs
the framework tests in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from tests.conftest import asgi_request, make_pipeline
app = FastAPI()
app.get("/x")(lambda: {})
pipeline = make_pipeline()
FastAPIInstrumentor.instrument_app(app, tracer_provider=pipeline.provider)
asgi_request(app, "GET", "/x")
print(*[k for s in pipeline.exporter.get_finished_spans() if s.kind.name == "SERVER" for k in s.attributes])
"""


@pytest.mark.parametrize("mode", ["http", "http/dup"])
def test_framework_events_are_the_same_in_every_semconv_mode(mode: str) -> None:
    """FastAPI, Starlette, ASGI, Flask, WSGI and Django map identically with new attribute names."""
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": mode}
    # The mode is really in force: a FastAPI span carries the new attribute names.
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    keys = set(probe.stdout.split())
    assert "http.request.method" in keys and "url.path" in keys
    assert ("http.method" in keys) is (mode == "http/dup")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/frameworks/test_frameworks.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
