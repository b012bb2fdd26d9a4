"""The package's public surface: what ``__all__`` names, and every path users write, still resolving."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import pytest

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


# The paths users write (the README and docs show them, Pyramid settings store the tween's) and
# the entry points' objects: each resolves to the one object of its home.
PUBLIC_PATHS = {
    "beacon_otel.distro:configure": "beacon_otel.setup.distro:configure",
    "beacon_otel.distro:BeaconDistro": "beacon_otel.setup.distro:BeaconDistro",
    "beacon_otel.distro:BeaconConfigurator": "beacon_otel.setup.distro:BeaconConfigurator",
    "beacon_otel.distro:pre_instrument": "beacon_otel.setup.distro:pre_instrument",
    "beacon_otel.hooks:compose": "beacon_otel.common.compose:compose",
    "beacon_otel.pyramid_support:instrument_config": "beacon_otel.frameworks.pyramid:instrument_config",
    "beacon_otel.pyramid_support:beacon_tween_factory": "beacon_otel.frameworks.pyramid:beacon_tween_factory",
    "beacon_otel.aiohttp_support:instrument_app": "beacon_otel.frameworks.aiohttp:instrument_app",
    "beacon_otel.route_lookup:install": "beacon_otel.frameworks.route_lookup:install",
    "beacon_otel.spool:destinations": "beacon_otel.spool.files:destinations",
    "beacon_otel.cli:main": "beacon_otel.cli:main",
}


def _resolve(path: str) -> object:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name) if name else importlib.import_module(module)


@pytest.mark.parametrize(("public", "home"), PUBLIC_PATHS.items())
def test_public_paths_keep_resolving(public: str, home: str) -> None:
    """Each public path users write resolves to the very object of its home in the package."""
    assert _resolve(public) is _resolve(home)


def test_the_pyramid_tween_is_registered_under_its_public_dotted_name() -> None:
    """The tween Beacon adds is named by the path users' settings store, and Pyramid resolves it."""
    from pyramid.path import DottedNameResolver

    from beacon_otel.frameworks.pyramid import TWEEN, beacon_tween_factory

    assert TWEEN == "beacon_otel.pyramid_support.beacon_tween_factory"
    assert DottedNameResolver().resolve(TWEEN) is beacon_tween_factory


def test_every_entry_point_loads() -> None:
    """The distro, configurator, pre-instrument hook, instrumentors, plugin and command all load."""
    groups = [
        "opentelemetry_distro",
        "opentelemetry_configurator",
        "opentelemetry_pre_instrument",
        "opentelemetry_instrumentor",
        "pytest11",
        "console_scripts",
    ]
    ours = [
        entry_point
        for group in groups
        for entry_point in importlib.metadata.entry_points(group=group)
        if entry_point.value.startswith("beacon_otel.")
    ]
    assert len(ours) == 8, ours
    for entry_point in ours:
        assert entry_point.load() is _resolve(entry_point.value), entry_point
