"""Patching third-party code: once per target, marked, listed, and undone to the very original."""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from beacon_otel.common import patching


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
    assert patching.patch(owner, "greet", louder, name="test: louder")
    replacement = owner.greet
    assert not patching.patch(owner, "greet", louder, name="test: louder")
    assert owner.greet is replacement
    assert owner().greet() == "OWNER"
    assert patching.is_patched(owner, "greet")
    assert patching.patched().count("test: louder") == 1


def test_undo_puts_back_the_original_or_the_inherited_attribute(classes: tuple[type, type]) -> None:
    """An owned method comes back as the same object; an inherited one is inherited again."""
    owner, heir = classes
    original = owner.__dict__["greet"]
    patching.patch(owner, "greet", louder, name="test: louder")
    patching.patch(heir, "greet", louder, name="test: louder")
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
    patching.patch(module, "lookup", lambda original: lambda: "narrowed", name="test: module")
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
        results.append(patching.patch(owner, "greet", louder, name="test: louder"))

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
    assert fastapi_support.VALIDATION_PATCH in patching.patched()
    assert patching.is_patched(RequestValidationError, "__init__")
