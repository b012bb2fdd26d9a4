"""Bench modules run their measured parts in child processes and answer with one JSON line.

A child prints whatever it likes, then its result as the last line of stdout, as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any


def last_json_line(out: str) -> Any:
    """The result a child printed: the last line of its stdout, as JSON."""
    return json.loads(out.strip().splitlines()[-1])


def run_module(module: str, args: list[str], env: Mapping[str, str] | None = None) -> Any:
    """Run ``python -m module *args`` to completion and return its result."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return last_json_line(out)
