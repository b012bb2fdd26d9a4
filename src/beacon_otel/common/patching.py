"""One way to patch someone else's code: once, marked, its original kept, listed and undoable.

Every place Beacon replaces an attribute of a third-party class or module (a framework's
``__init__``, an exception's constructor, an instrumentation's route lookup) goes through
:func:`patch`. The replacement is made from the original by a factory and installed under one
lock, at most once per target: the replacement carries :data:`MARKER`, so a second call finds it
and does nothing. The original is kept in a registry: :func:`patched` lists what this process
has patched, :func:`undo` puts originals back (tests do; so does an instrumentor's
``uninstrument``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARKER = "_beacon_otel_patch"
"""Set on each replacement, to the patch's name."""


@dataclass(frozen=True, slots=True)
class Patch:
    """One attribute replaced: where, what it was, and whether the owner held it itself."""

    name: str
    owner: Any
    attribute: str
    original: Any
    owned: bool
    """False when the original was inherited or bound from a class: undoing deletes the attribute."""


_lock = threading.RLock()
_patches: dict[tuple[int, str], Patch] = {}


def patch(owner: Any, attribute: str, replace: Callable[[Any], Any], *, name: str) -> bool:
    """Set ``owner.attribute`` to ``replace(original)``, once; False when it is patched already.

    ``name`` says what the patch is for, in the doctor's and the tests' words
    (``"fastapi: request validation errors"``).
    """
    with _lock:
        original = getattr(owner, attribute)
        if getattr(original, MARKER, None) is not None:
            return False
        replacement = replace(original)
        setattr(replacement, MARKER, name)
        owned = attribute in getattr(owner, "__dict__", {})
        _patches[(id(owner), attribute)] = Patch(name, owner, attribute, original, owned)
        setattr(owner, attribute, replacement)
        return True


def is_patched(owner: Any, attribute: str) -> bool:
    """Whether ``owner.attribute`` is one of Beacon's replacements."""
    return getattr(getattr(owner, attribute, None), MARKER, None) is not None


def patched() -> list[str]:
    """The names of the patches in force in this process, oldest first."""
    with _lock:
        return [each.name for each in _patches.values()]


def undo(name: str | None = None) -> None:
    """Put back the originals of the patches called ``name`` (every patch when ``None``)."""
    with _lock:
        for key, each in reversed(list(_patches.items())):
            if name is not None and each.name != name:
                continue
            if each.owned:
                setattr(each.owner, each.attribute, each.original)
            else:
                delattr(each.owner, each.attribute)
            del _patches[key]
