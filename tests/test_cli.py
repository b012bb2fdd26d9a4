"""The beacon-otel command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `beacon-otel ARGS` to completion in a subprocess."""
    command = [sys.executable, "-m", "beacon_otel.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)


def test_version_prints_the_installed_versions() -> None:
    """--version names beacon-otel's installed version and the OpenTelemetry SDK's, and exits 0."""
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    beacon, sdk = importlib.metadata.version("beacon-otel"), importlib.metadata.version("opentelemetry-sdk")
    assert result.stdout.startswith(f"beacon-otel {beacon} (opentelemetry-sdk {sdk}, Python ")
