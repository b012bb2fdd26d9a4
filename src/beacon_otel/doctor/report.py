"""`beacon-otel doctor`'s findings and the report they make: one line each, grouped by section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass(frozen=True)
class Finding:
    """One line of the report: how it stands (ok, warn, FAIL, info) and what was found."""

    section: str
    level: str
    text: str


def adder(found: list[Finding], section: str) -> Callable[[str, str], None]:
    """``add(level, text)`` appending findings of one section."""
    return lambda level, text: found.append(Finding(section, level, text))


def report(findings: list[Finding]) -> tuple[str, int]:
    """The findings as text, and the exit status: 0 only when nothing FAILed."""
    lines, section = [], None
    for finding in findings:
        if finding.section != section:
            section = finding.section
            lines += ["", section]
        lines.append(f"  {finding.level:<4}  {finding.text}")
    failures = sum(f.level == FAIL for f in findings)
    lines.append("")
    lines.append(f"{failures} problem(s) to fix." if failures else "Everything needed is in order.")
    return "\n".join(lines).lstrip("\n"), 1 if failures else 0
