"""The kinds of value a setting holds: how each is read from an environment variable and checked.

A field of :class:`beacon_otel.config.settings.BeaconConfig` names its kind and its variable in its
metadata (:func:`setting`). The functions here say what is wrong with a value
(:class:`Unsuitable`); the configuration turns that into an error naming the setting.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TOKEN_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Kind(enum.Enum):
    """What a setting holds: how its variable is parsed and its value checked."""

    TEXT = "text"
    KEY = "key"
    URL = "url"
    BOOL = "bool"
    COUNT = "count"  # an integer >= 1
    BYTES = "bytes"  # an integer >= 0
    SECONDS = "seconds"  # a positive, finite number
    HEADER = "header"  # an HTTP header name, or None
    CALLABLE = "callable"  # a callable, or None; ``package.module:function`` in the environment
    PATH = "path"  # a directory, or None
    MAPPING = "mapping"  # not read from the environment
    CHOICE = "choice"  # one of the field's ``choices``
    PATTERNS = "patterns"  # regular expressions; comma-separated in the environment


def setting(kind: Kind, variable: str | None, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """A field's metadata: it holds a ``kind`` of value, set by ``variable`` from the environment.

    A ``Kind.CHOICE`` field takes one of ``choices``.
    """
    return {"kind": kind, "variable": variable, "choices": choices}


class Unsuitable(ValueError):
    """A value that does not suit its kind; ``expected`` completes "Expected X to ..."."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(f"expected to {expected}, got {value!r}")
        self.expected = expected
        self.value = value


def parse_bool(raw: str) -> bool:
    """A boolean environment value (true/false/1/0/yes/no/on/off, any case)."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise Unsuitable("be one of true/false/1/0/yes/no", raw)


def parse(kind: Kind, raw: str) -> Any:
    """The value of an environment variable of ``kind`` (stripped, not empty)."""
    if kind is Kind.BOOL:
        return parse_bool(raw)
    if kind is Kind.CALLABLE:
        return import_callable(raw)
    if kind in (Kind.COUNT, Kind.BYTES):
        try:
            return int(raw)
        except ValueError:
            raise Unsuitable("be an integer", raw) from None
    if kind is Kind.SECONDS:
        try:
            return float(raw)
        except ValueError:
            raise Unsuitable("be a number", raw) from None
    if kind is Kind.CHOICE:
        return raw.lower()
    if kind is Kind.PATTERNS:
        # "none" is the way to say "no patterns" in the environment, where empty means unset.
        if raw.lower() == "none":
            return ()
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def checked(kind: Kind, value: Any, choices: tuple[str, ...] = ()) -> Any:
    """``value`` if it suits ``kind`` (a path made a ``Path``); else :class:`Unsuitable`."""
    if kind is Kind.BOOL and not isinstance(value, bool):
        raise Unsuitable("be a bool", value)
    if kind in (Kind.COUNT, Kind.BYTES):
        minimum = 1 if kind is Kind.COUNT else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise Unsuitable(f"be an integer >= {minimum}", value)
    if kind is Kind.SECONDS:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 < float(value) < float("inf"):
            raise Unsuitable("be a positive number of seconds", value)
    if kind is Kind.HEADER and value is not None and not is_header_name(value):
        raise Unsuitable("be an HTTP header name", value)
    if kind is Kind.CALLABLE and value is not None and not callable(value):
        raise Unsuitable("be callable", value)
    if kind is Kind.PATH and value is not None:
        return Path(value)
    if kind is Kind.CHOICE and value not in choices:
        raise Unsuitable("be one of " + ", ".join(choices), value)
    if kind is Kind.PATTERNS:
        return checked_patterns(value)
    return value


def checked_patterns(value: Any) -> tuple[str, ...]:
    """A tuple of regular expressions that compile; a lone string is one pattern."""
    patterns = (value,) if isinstance(value, str) else value
    try:
        patterns = tuple(patterns)
    except TypeError:
        raise Unsuitable("be a sequence of regular expressions", value) from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise Unsuitable("be a sequence of regular expressions", value)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise Unsuitable(f"be regular expressions ({pattern!r}: {exc})", value) from None
    return patterns


def is_header_name(value: object) -> bool:
    """Whether ``value`` is an HTTP header name (an RFC 9110 token)."""
    return isinstance(value, str) and bool(value) and all(c in _TOKEN_CHARS for c in value)


def import_callable(reference: str) -> ImportedCallable:
    """``package.module:function`` as a callable that imports its target on first use."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise Unsuitable("be 'package.module:function'", reference)
    try:
        found = importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise Unsuitable("name an importable module", reference)
    return ImportedCallable(module_name, attribute)


class ImportedCallable:
    """A function named in the environment, imported when first called.

    Importing it at startup would import the app's own modules before the instrumentations
    patch the frameworks, and leave the app uninstrumented.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self.reference = f"{module}:{attribute}"
        self._target: Any = None

    def __call__(self, *args: Any) -> Any:
        return self.target()(*args)

    def target(self) -> Any:
        """The named function, imported on the first call of this."""
        if self._target is None:
            module_name, _, attribute = self.reference.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
            self._target = target
        return self._target

    def __repr__(self) -> str:
        return f"ImportedCallable({self.reference!r})"
