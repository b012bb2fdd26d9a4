"""Route templates in the contract's form: Django regular-expression routes become path templates.

Django regular-expression routes (``re_path``, Django REST framework routers) are normalised
to the form of Django's path converters; docs/routes.md has a table of examples.
"""

from __future__ import annotations

import re

_NAMED_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>")
_FORMAT_SUFFIX = re.compile(r"\\?\.\(\?P<format>[^)]*\)/?\??\$?$")
_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")
_REGEX_MARKS = re.compile(r"[\^$()\[\]*+?|\\{}]")


def regex_route_template(pattern: str) -> str:
    """A regex route in the form of Django's path converters.

    ``^legacy/(?P<year>[0-9]{4})/$`` becomes ``legacy/<year>/``; DRF's
    ``books/(?P<pk>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$`` becomes ``books/<pk>.<format>``.
    A route without regex syntax comes back unchanged.
    """
    if not _REGEX_MARKS.search(pattern):
        return pattern
    text = _FLAGS.sub("", _FORMAT_SUFFIX.sub(".<format>", pattern))
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        named = _NAMED_GROUP.match(text, i)
        if named is not None:
            out.append(f"<{named.group('name')}>")
            i = _group_end(text, named.end())
            continue
        char = text[i]
        if char == "(":
            out.append("<arg>")  # an unnamed group: Django passes it as a positional argument
            i = _group_end(text, i + 1)
        elif char == "\\" and i + 1 < n:
            out.append(text[i + 1])  # an escaped literal: \. is a dot
            i += 2
        elif char in "^$":
            i += 1  # anchors
        elif char == "?" and out and out[-1] == "/":
            out.pop()  # an optional slash (DRF's /?): the template is the form without it
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out) or "/"


def _group_end(text: str, i: int) -> int:
    """The index just after the group whose body starts at ``i`` (nested groups, classes, escapes)."""
    depth, in_class = 1, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i
