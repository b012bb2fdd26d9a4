"""One way to patch someone else's code: once, marked, its original kept, listed and undoable.

Every place Beacon replaces an attribute of a third-party class or module (a framework's
``__init__``, an exception's constructor, an instrumentation's route lookup) goes through
:func:`patch`. The replacement is made from the original by a factory and installed under one
lock, at most once per target: the replacement carries :data:`MARKER`, so a second call finds it
and does nothing. The original is kept in a registry: :func:`patched` lists what this process
has patched, :func:`undo` puts originals back (tests do; so does an instrumentor's
``uninstrument``).

Each patch is declared where it is written, as a :class:`PatchSite` (what it replaces, in which
package, when), and :func:`patch` takes only a declared site. ``beacon-otel doctor`` runs in a
process of its own, where nothing has been patched: it lists the declared sites of the packages
installed (:func:`declared`), which are every patch Beacon can apply there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARKER = "_beacon_otel_patch"
"""Set on each replacement, to the patch's name."""


@dataclass(frozen=True, slots=True)
class PatchSite:
    """A patch Beacon may apply: declared with :func:`site` in the module that applies it."""

    name: str
    """What the patch is for, in the doctor's and the tests' words."""
    package: str
    """The distribution whose code is replaced (``fastapi``, ``opentelemetry-instrumentation-django``)."""
    target: str
    """The attribute replaced, dotted from its module (``fastapi.FastAPI.__init__``)."""
    when: str
    """When Beacon applies it (``with the FastAPI hooks``)."""


_declared: dict[str, PatchSite] = {}


def site(name: str, *, package: str, target: str, when: str) -> PatchSite:
    """Declare a patch site (at import of the module that applies it) and return it, for :func:`patch`."""
    declared_site = PatchSite(name, package, target, when)
    _declared[name] = declared_site
    return declared_site


def declared() -> list[PatchSite]:
    """Every patch site declared by the modules imported so far, in declaration order."""
    return list(_declared.values())


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


def patch(owner: Any, attribute: str, replace: Callable[[Any], Any], *, site: PatchSite) -> bool:
    """Set ``owner.attribute`` to ``replace(original)``, once; False when it is patched already.

    ``site`` is the patch's declaration (see :func:`site`).
    """
    name = site.name
    with _lock:
        _declared.setdefault(name, site)  # a site made without site(): listed all the same
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


def undo(site: PatchSite | str | None = None) -> None:
    """Put back the originals of the patches of ``site`` (or so named; every patch when ``None``)."""
    name = site.name if isinstance(site, PatchSite) else site
    with _lock:
        for key, each in reversed(list(_patches.items())):
            if name is not None and each.name != name:
                continue
            if each.owned:
                setattr(each.owner, each.attribute, each.original)
            else:
                delattr(each.owner, each.attribute)
            del _patches[key]
