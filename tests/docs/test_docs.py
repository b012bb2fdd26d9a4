"""The README and docs/ keep their promises: links resolve, and code blocks run or say they cannot.

A code block that cannot run as written (it needs your app, your key or a server) starts with
the visible comment line `# illustrative`, which a reader sees too. Every other block is checked:

- Python compiles, and what it takes from `beacon_otel` exists (imports and `beacon_otel.name`);
- JSON parses;
- each shell command names a program that is installed, and `beacon-otel` subcommands and their
  options, `make` targets and `pip install` extras exist.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from beacon_otel import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ILLUSTRATIVE = "# illustrative"
VENV_BIN = Path(sys.executable).parent

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.language or 'plain'})"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(page, line, match.group(1), match.group(2)))
    return found


def prose(text: str) -> str:
    """The page without its code blocks and code spans, where a `[x](y)` is not a link."""
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(heading) for heading in _HEADING.findall(_FENCE.sub("", page.read_text()))}


def links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        for match in _LINK.finditer(prose(page.read_text())):
            target = match.group(1) or match.group(2)
            if not re.match(r"[a-z]+:", target):  # web links are not followed: tests stay on loopback
                found.append((page, target))
    return found


@pytest.mark.parametrize(("page", "target"), links(), ids=lambda x: str(x))
def test_every_relative_link_and_anchor_resolves(page: Path, target: str) -> None:
    """A link to a file names one that exists, and its #anchor is a heading of that file."""
    path_part, _, anchor = target.partition("#")
    destination = (page.parent / path_part).resolve() if path_part else page
    assert destination.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
    if anchor:
        assert destination.suffix == ".md", f"{target}: an anchor in a file that is not Markdown"
        assert anchor in anchors(destination), (
            f"{page.relative_to(ROOT)} links to #{anchor}, not a heading of {destination.name}: "
            f"{sorted(anchors(destination))}"
        )


def checked(language: str) -> list[Block]:
    return [b for b in blocks() if b.language == language and not b.text.startswith(ILLUSTRATIVE)]


@pytest.mark.parametrize("block", checked("python"), ids=str)
def test_python_blocks_compile_and_what_they_take_from_beacon_otel_exists(block: Block) -> None:
    """A Python block compiles; its beacon_otel imports and beacon_otel.<name> uses resolve."""
    tree = ast.parse(block.text, filename=str(block))
    compile(tree, str(block), "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("beacon_otel"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("beacon_otel"):
                    importlib.import_module(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "beacon_otel"
        ):
            assert hasattr(importlib.import_module("beacon_otel"), node.attr), (
                f"{block}: beacon_otel has no {node.attr}"
            )


@pytest.mark.parametrize("block", checked("json"), ids=str)
def test_json_blocks_parse(block: Block) -> None:
    """A JSON example is JSON."""
    json.loads(block.text)


def commands(text: str) -> list[list[str]]:
    """Each command of a shell block as words: comments dropped, continuations joined, `&&` split."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = next((i for i, w in enumerate(words) if w in ("&&", "||", ";", "&", "|")), len(words))
            if words[:end]:
                found.append(words[:end])
            words = words[end + 1 :]
    return found


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.\-/]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = ", section, re.MULTILINE))


def check_beacon_otel(words: list[str]) -> None:
    """The subcommand and options exist: argparse accepts them (placeholders stand for values)."""
    parser = cli._parser()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(words)
        except SystemExit as exit_:
            assert exit_.code == 0, f"beacon-otel {shlex.join(words)}: {stderr.getvalue()}"


def check_command(words: list[str], block: Block) -> None:
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]  # VAR=value before a command
    if not words or words[0] == "export":
        assert all("=" in w for w in words[1:]), f"{block}: {words}"
        return
    program, args = words[0], words[1:]
    if program == "beacon-otel":
        check_beacon_otel(args)
    elif program in ("python", "python3") and args[:2] == ["-m", "beacon_otel.cli"]:
        check_beacon_otel(args[2:])
    elif program == "make":
        missing = set(args) - make_targets()
        assert not missing, f"{block}: no make target {sorted(missing)}"
    elif program == "pip" and args[:1] == ["install"]:
        for requirement in args[1:]:
            named = re.match(r"beacon-otel\[([\w,-]+)\]", requirement)
            if named:
                missing = set(named.group(1).split(",")) - extras()
                assert not missing, f"{block}: beacon-otel has no extra {sorted(missing)}"
    elif program == "opentelemetry-instrument":
        assert (VENV_BIN / program).exists()
        check_command(args, block)
    elif program in (".", "source", "cd", "cat"):
        return
    else:
        found = shutil.which(program, path=f"{VENV_BIN}:/usr/bin:/bin")
        assert found or program in ("curl",), f"{block}: {program} is not a program installed here"


@pytest.mark.parametrize("block", checked("sh"), ids=str)
def test_shell_blocks_name_commands_that_exist(block: Block) -> None:
    """Each command of a shell block names an installed program, a real subcommand, target or extra."""
    for words in commands(block.text):
        check_command(words, block)


def test_code_blocks_say_their_language() -> None:
    """Every block names a language, so none escapes the checks above by saying nothing."""
    unnamed = [str(b) for b in blocks() if not b.language]
    assert not unnamed, unnamed
    unchecked = {b.language for b in blocks()} - {"python", "json", "sh", "text"}
    assert not unchecked, f"blocks in languages no test checks: {unchecked}"


def test_the_check_catches_what_it_looks_for() -> None:
    """The checks fail on a missing subcommand, make target, extra, beacon_otel name and anchor."""
    fake = Block(ROOT / "README.md", 1, "sh", "")
    for wrong in (
        ["beacon-otel", "no-such-command"],
        ["make", "no-such-target"],
        ["pip", "install", "beacon-otel[nope]"],
    ):
        with pytest.raises(AssertionError):
            check_command(wrong, fake)
    with pytest.raises(AssertionError):
        test_python_blocks_compile_and_what_they_take_from_beacon_otel_exists(
            Block(ROOT / "README.md", 1, "python", "import beacon_otel\nbeacon_otel.no_such_name()\n")
        )
    with pytest.raises(AssertionError):
        test_every_relative_link_and_anchor_resolves(ROOT / "README.md", "docs/dev-ingest.md#no-such-heading")
    assert "413-the-ingests-body-limit" in anchors(ROOT / "docs" / "delivery.md")


def test_help_is_self_sufficient() -> None:
    """`beacon-otel --help` and each subcommand's help point at no docs/ file, which a wheel lacks."""
    parser = cli._parser()
    helps = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps += [sub.format_help() for sub in action.choices.values()]
    assert len(helps) > 5
    for text in helps:
        assert "docs/" not in text and ".md" not in text, text
