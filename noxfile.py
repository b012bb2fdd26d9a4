"""The version matrix: the oldest and the newest of every supported line, in CI after ``make test``.

``nox`` (from the dev environment) runs two sessions with uv:

- ``oldest``: Python 3.10 and the lowest version of every direct dependency that pyproject.toml
  allows (``uv pip install --resolution lowest-direct``): OpenTelemetry SDK and
  instrumentations, and each framework at its declared lower bound;
- ``newest``: Python 3.13 and the newest release of each.

Each runs the framework-facing unit tests (the instrumentors, span mapping, consumers, the
event contract, the processor) and the fast integration subset (every framework served by hand
over a socket to the strict dev ingest, and the manual-setup tests). The lower bounds in
pyproject.toml are the ones the ``oldest`` session passes. ``nox -s oldest -- tests`` runs the
whole unit suite instead: some of its tests assume the newest FastAPI (native telemetry) and
do not pass at the lower bounds yet.
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True

UNIT = [
    "tests/test_instrumentation_litestar.py",
    "tests/test_instrumentation_bottle.py",
    "tests/test_mapping.py",
    "tests/test_consumer.py",
    "tests/test_event.py",
    "tests/test_processor.py",
    "tests/test_config.py",
]
FAST_INTEGRATION = [
    "tests/integration/test_frameworks_served.py",
    "tests/integration/test_manual_setup.py",
    "-k",
    "not zero_code",
]


def interpreter(version: str) -> str:
    """A pyenv-installed interpreter of ``version`` when there is one (CI machines), else the name."""
    root = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    return found[-1] if found else f"python{version}"


def run_tests(session: nox.Session) -> None:
    session.run("uv", "pip", "list", external=True)  # the versions this run tested, in the log
    pytest = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    session.run(*pytest, "-m", "not integration", *(session.posargs or UNIT))
    session.run(*pytest, "-m", "integration", *FAST_INTEGRATION)


@nox.session(python=interpreter("3.10"))
def oldest(session: nox.Session) -> None:
    """Python 3.10, every direct dependency at the lowest version pyproject.toml allows."""
    session.install("--resolution", "lowest-direct", "-e", ".[dev]")
    run_tests(session)


@nox.session(python=interpreter("3.13"))
def newest(session: nox.Session) -> None:
    """Python 3.13, every dependency at its newest release."""
    session.install("--resolution", "highest", "-e", ".[dev]")
    run_tests(session)
