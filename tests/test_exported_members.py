"""The package's public surface: exactly what ``__all__`` names, each defined in the package."""

from __future__ import annotations

import beacon_otel


def test_all_is_sorted_and_complete() -> None:
    """Every public name of the package is in ``__all__``, sorted, and nothing else is."""
    public = {
        name
        for name, value in vars(beacon_otel).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("beacon_otel")
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
