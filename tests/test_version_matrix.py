"""The version matrix's guard (noxfile.py): a declared lower bound the oldest session does not
install fails the session, so pyproject.toml never claims a version nothing tests."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.utils import canonicalize_name

from noxfile import direct_requirements, lower_bound_drift

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PROJECT = {
    "requires-python": ">=3.10",
    "dependencies": ["opentelemetry-sdk>=1.43", "requests>=2.28"],
    "optional-dependencies": {
        "dev": ["Flask>=3.0", "tomli>=2.0; python_version < '3.11'"],
    },
}


def test_bounds_equal_to_the_installed_versions_pass() -> None:
    """Installed exactly at each lower bound (names compared canonically, 3.0 == 3.0.0): no drift."""
    installed = {"opentelemetry_sdk": "1.43.0", "requests": "2.28", "flask": "3.0.0", "tomli": "2.0"}
    assert lower_bound_drift(PROJECT, "3.10.13", installed) == []


def test_a_bound_the_resolution_raised_is_drift() -> None:
    """Another requirement forced a higher version than declared: the declared bound is untested."""
    installed = {"opentelemetry-sdk": "1.45.1", "requests": "2.28.0", "flask": "3.0.0", "tomli": "2.0.0"}
    assert lower_bound_drift(PROJECT, "3.10.13", installed) == [
        "opentelemetry-sdk>=1.43: the lowest resolution installed 1.45.1"
    ]


def test_a_requirement_missing_from_the_environment_is_drift() -> None:
    """An extra's package the session did not install is not tested either."""
    installed = {"opentelemetry-sdk": "1.43.0", "flask": "3.0.0", "tomli": "2.0.0"}
    assert lower_bound_drift(PROJECT, "3.10.13", installed) == [
        "requests>=2.28: not installed (every extra must be in the dev extra)"
    ]


def test_the_python_line_and_markers_follow_the_session_interpreter() -> None:
    """requires-python's bound must be the session's minor version; a requirement whose marker
    excludes that interpreter is not expected."""
    installed = {"opentelemetry-sdk": "1.43.0", "requests": "2.28.0", "flask": "3.0.0"}
    assert lower_bound_drift(PROJECT, "3.11.7", installed) == [
        "requires-python >=3.10 but the session runs Python 3.11.7"
    ]


def test_every_extra_is_installed_by_the_dev_extra() -> None:
    """The matrix installs '.[dev]': each user-facing extra's packages are in it or in the
    dependencies, once and at the same bound, so the oldest session tests every extra's bound."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = dict(project["optional-dependencies"])
    dev = direct_requirements({"dependencies": [*project["dependencies"], *extras.pop("dev")]})
    assert len({canonicalize_name(requirement.name) for requirement in dev}) == len(dev), "listed twice"
    bounds = {canonicalize_name(requirement.name): requirement.specifier for requirement in dev}
    for requirement in direct_requirements({"optional-dependencies": extras}):
        assert bounds.get(canonicalize_name(requirement.name)) == requirement.specifier, str(requirement)
