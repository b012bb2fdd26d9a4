"""Patching third-party code: once per target, marked, listed, and undone to the very original."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from beacon_otel.common import patching
from tests.conftest import configure_django

LOUDER = patching.site(
    "test: louder", package="beacon-otel", target="tests.common.Base.greet", when="in tests"
)
MODULE = patching.site(
    "test: module", package="beacon-otel", target="a test module's lookup", when="in tests"
)


class Base:
    def greet(self) -> str:
        return "hello"


@pytest.fixture
def classes() -> Iterator[tuple[type, type]]:
    """A class owning its method and a subclass inheriting it, fresh for each test."""

    class Owner(Base):
        def greet(self) -> str:
            return "owner"

    class Heir(Base):
        pass

    yield Owner, Heir
    patching.undo("test: louder")


def louder(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def greet(self: Any) -> str:
        return original(self).upper()

    return greet


def test_a_patch_is_installed_once_and_marked(classes: tuple[type, type]) -> None:
    """The first call replaces the attribute; a second finds the marker and changes nothing."""
    owner, _ = classes
    assert patching.patch(owner, "greet", louder, site=LOUDER)
    replacement = owner.greet
    assert not patching.patch(owner, "greet", louder, site=LOUDER)
    assert owner.greet is replacement
    assert owner().greet() == "OWNER"
    assert patching.is_patched(owner, "greet")
    assert patching.patched().count("test: louder") == 1


def test_undo_puts_back_the_original_or_the_inherited_attribute(classes: tuple[type, type]) -> None:
    """An owned method comes back as the same object; an inherited one is inherited again."""
    owner, heir = classes
    original = owner.__dict__["greet"]
    patching.patch(owner, "greet", louder, site=LOUDER)
    patching.patch(heir, "greet", louder, site=LOUDER)
    assert heir().greet() == "HELLO"
    patching.undo("test: louder")
    assert owner.__dict__["greet"] is original
    assert "greet" not in heir.__dict__ and heir().greet() == "hello"
    assert "test: louder" not in patching.patched()
    assert not patching.is_patched(owner, "greet")


def test_a_module_function_is_patched_and_undone() -> None:
    """Module attributes (an instrumentation's lookup) go through the same registry."""
    module = types.ModuleType("somewhere")
    module.lookup = lambda: "stock"  # type: ignore[attr-defined]
    stock = module.lookup  # type: ignore[attr-defined]
    patching.patch(module, "lookup", lambda original: lambda: "narrowed", site=MODULE)
    assert module.lookup() == "narrowed"  # type: ignore[attr-defined]
    patching.undo("test: module")
    assert module.lookup is stock  # type: ignore[attr-defined]


def test_racing_callers_patch_once(classes: tuple[type, type]) -> None:
    """Threads patching the same target at once wrap it once, not once each."""
    owner, _ = classes
    start = threading.Barrier(8)
    results: list[bool] = []

    def patch() -> None:
        start.wait()
        results.append(patching.patch(owner, "greet", louder, site=LOUDER))

    threads = [threading.Thread(target=patch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert owner().greet() == "OWNER"


def test_the_framework_patches_are_registered_by_name() -> None:
    """FastAPI's validation-error patch is listed under its name and marks the constructor."""
    from fastapi.exceptions import RequestValidationError

    from beacon_otel.frameworks import fastapi as fastapi_support

    fastapi_support.capture_validation_errors()
    assert fastapi_support.VALIDATION_PATCH.name in patching.patched()
    assert patching.is_patched(RequestValidationError, "__init__")


def _resolve(target: str) -> object:
    """The object a dotted target names: the longest importable module, then attributes."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(target)


def test_every_declared_site_is_an_attribute_of_its_installed_package() -> None:
    """What the doctor lists is true: each site names an attribute that exists in the installed package."""
    from beacon_otel.doctor import diagnose  # noqa: F401  (declares the frameworks' and instrumentors' sites)
    from beacon_otel.setup import exits, instrumentors  # noqa: F401  (and set-up's)

    configure_django()  # Django Ninja and REST framework read settings as they are imported
    sites = [each for each in patching.declared() if each.package != "beacon-otel"]
    assert {each.package for each in sites} >= {"fastapi", "uvicorn", "django-ninja", "pyramid", "aiohttp"}
    for each in sites:
        try:
            importlib.metadata.version(each.package)
        except importlib.metadata.PackageNotFoundError:
            continue  # opentelemetry-distro: not installed here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # bottle imports cgi
            assert callable(_resolve(each.target)), each


def test_a_site_patched_without_being_declared_is_listed_all_the_same(classes: tuple[type, type]) -> None:
    """A PatchSite made by hand is declared when it is applied: nothing patched goes unlisted."""
    owner, _ = classes
    by_hand = patching.PatchSite("test: louder", "beacon-otel", "tests.common.Owner.greet", "in tests")
    patching._declared.pop("test: louder")
    try:
        patching.patch(owner, "greet", louder, site=by_hand)
        assert by_hand in patching.declared()
    finally:
        patching._declared["test: louder"] = LOUDER
