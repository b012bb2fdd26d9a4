"""Where the test apps live: each framework's in its folder under tests/frameworks/, the rest in tests/apps/.

A child process (a server under ``opentelemetry-instrument``, a Lambda runtime) names its app by
module (``fastapi_app:app``) or runs a file (``manage.py``): :data:`APP_PATH` on its PYTHONPATH
makes every app importable from any directory, :func:`app_file` finds a file.
"""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
APPS = TESTS / "apps"
"""The scripts no framework owns: gunicorn's readiness hook, the Lambda runtime loop, the spool
writer, the green-thread requests."""
APP_DIRS = (
    *sorted(path for path in (TESTS / "frameworks").iterdir() if path.is_dir() and path.name[0] not in "._"),
    APPS,
)
APP_PATH = os.pathsep.join(str(path) for path in APP_DIRS)
"""For a child's PYTHONPATH. Each framework's folder, never tests/frameworks itself: its folders
are named like the frameworks (``fastapi``, ``flask``) and would stand in for them."""


def app_file(name: str) -> Path:
    """The app file (or package) called ``name``, in whichever folder holds it."""
    found = [path / name for path in APP_DIRS if (path / name).exists()]
    if len(found) != 1:
        raise LookupError(f"{name}: expected in exactly one of {APP_DIRS}, found {found}")
    return found[0]
