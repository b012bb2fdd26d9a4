"""The version matrix: the oldest and the newest of every supported line, in CI after ``make test``.

``nox`` (from the dev environment) runs two sessions with uv:

- ``oldest``: Python 3.10 and the lowest version of every direct dependency that pyproject.toml
  allows (``uv pip install --resolution lowest-direct``): OpenTelemetry SDK and
  instrumentations, and each framework at its declared lower bound. The session fails when an
  installed version is not exactly the declared lower bound (a bound nothing tests);
- ``newest``: Python 3.13 and the newest release of each.

Each prints the installed versions, then runs the whole unit suite and the fast integration
subset (every framework served over a socket to the strict dev ingest, zero-code and by hand,
and the manual-setup tests). Tests of a feature that only newer releases have say so in their
skip reason (``requires`` in tests/conftest.py). ``make test`` covers Python 3.11 (the default
``python3``) with the dev environment's versions.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nox
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True

UNIT = ["-m", "not integration", "tests"]
FAST_INTEGRATION = [
    "-m",
    "integration",
    "tests/integration/test_frameworks_served.py",
    "tests/integration/test_manual_setup.py",
]
PYPROJECT = Path(__file__).with_name("pyproject.toml")
# The session's Python and the version of every installed distribution, as JSON.
INSTALLED = (
    "import importlib.metadata as m, json, platform; "
    "print(json.dumps({'python': platform.python_version(), "
    "'distributions': {d.metadata['Name']: d.version for d in m.distributions()}}))"
)


def interpreter(version: str) -> str:
    """A pyenv-installed interpreter of ``version`` when there is one (CI machines), else the name."""
    root = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    return found[-1] if found else f"python{version}"


def direct_requirements(project: Mapping[str, Any]) -> list[Requirement]:
    """Every requirement pyproject.toml's [project] declares: dependencies and every extra's."""
    extras: Mapping[str, Iterable[str]] = project.get("optional-dependencies", {})
    lines = [*project.get("dependencies", []), *(line for group in extras.values() for line in group)]
    return [Requirement(line) for line in lines]


def lower_bound_drift(project: Mapping[str, Any], python: str, installed: Mapping[str, str]) -> list[str]:
    """What differs between the lower bounds ``project`` declares and what an environment installed.

    A lowest-direct resolution installs each direct dependency at its lower bound unless another
    requirement forces a higher one: then the declared bound is one that nothing tests. Every
    ``>=`` bound of the dependencies and of every extra must equal the installed version, and
    ``requires-python``'s bound the interpreter's minor version.
    """
    versions = {canonicalize_name(name): Version(version) for name, version in installed.items()}
    drift = []
    for bound in SpecifierSet(project.get("requires-python", "")):
        if bound.operator == ">=" and Version(bound.version).release[:2] != Version(python).release[:2]:
            drift.append(f"requires-python {bound} but the session runs Python {python}")
    marker_environment = {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python}
    for requirement in direct_requirements(project):
        if requirement.marker and not requirement.marker.evaluate(marker_environment):
            continue
        version = versions.get(canonicalize_name(requirement.name))
        if version is None:
            drift.append(f"{requirement}: not installed (every extra must be in the dev extra)")
            continue
        for bound in requirement.specifier:
            if bound.operator == ">=" and Version(bound.version) != version:
                drift.append(f"{requirement}: the lowest resolution installed {version}")
    return sorted(set(drift))


def run_tests(session: nox.Session) -> None:
    session.run("uv", "pip", "list", external=True)  # the versions this run tested, in the log
    pytest = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-ra"]
    session.run(*pytest, *(session.posargs or UNIT))
    if not session.posargs:
        session.run(*pytest, *FAST_INTEGRATION)


@nox.session(python=interpreter("3.10"))
def oldest(session: nox.Session) -> None:
    """Python 3.10, every direct dependency at the lowest version pyproject.toml allows."""
    session.install("--resolution", "lowest-direct", "-e", ".[dev]")
    found = json.loads(str(session.run("python", "-c", INSTALLED, silent=True)).strip().splitlines()[-1])
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    drift = lower_bound_drift(project, found["python"], found["distributions"])
    if drift:
        session.error(
            "declared lower bounds that this session does not test (declare the installed version;"
            " a reused environment may have drifted: nox --no-reuse-existing-virtualenvs):\n  "
            + "\n  ".join(drift)
        )
    run_tests(session)


@nox.session(python=interpreter("3.13"))
def newest(session: nox.Session) -> None:
    """Python 3.13, every dependency at its newest release."""
    session.install("--resolution", "highest", "-e", ".[dev]")
    run_tests(session)
