"""The package's public surface: exactly what ``__all__`` names, each defined in the package."""

from __future__ import annotations

import subprocess
import sys

import beacon_otel


def test_all_is_sorted_and_complete() -> None:
    """Every public name of the package is in ``__all__``, sorted, and nothing else is."""
    # dir(), not vars(): the exported names are imported on first use.
    public = {
        name
        for name in dir(beacon_otel)
        if not name.startswith("_")
        and getattr(getattr(beacon_otel, name), "__module__", "").startswith("beacon_otel")
    }
    assert beacon_otel.__all__ == sorted(beacon_otel.__all__)
    assert public | {"__version__"} == set(beacon_otel.__all__)


def test_exported_members_come_from_the_package() -> None:
    """Each exported member is defined by beacon-otel itself and claims its public home."""
    for name in beacon_otel.__all__:
        member = getattr(beacon_otel, name)
        if name == "__version__":
            assert isinstance(member, str)
            continue
        assert member.__module__.startswith("beacon_otel."), name


def test_importing_the_package_does_not_import_the_sdk() -> None:
    """`import beacon_otel` (as the pytest plugin and the CLI do) leaves the SDK unimported until used."""
    code = "import sys, beacon_otel; assert 'opentelemetry.sdk.trace' not in sys.modules, 'SDK imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
