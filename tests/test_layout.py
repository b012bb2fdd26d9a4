"""The package's shape: its import contracts hold, and they fail the build when an import climbs.

The contracts live in pyproject.toml (``[tool.importlinter]``) and ``make lint`` runs them; these
tests check that they hold today and that each kind of rule really refuses what it names, on a
copy of the package with one bad import added.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FACES = {"__init__.py", "cli.py", "testing.py", "version.py"}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the package under ``root/src``, with the project's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_contracts() -> None:
    """Every layer and never-rule in pyproject holds for the package as it is."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        ("mapping/facts.py", "beacon_otel.request.context", "Mapping never imports the request side"),
        ("common/guard.py", "beacon_otel.config.settings", "Layers"),
        ("doctor/report.py", "beacon_otel.setup.environment", "Layers"),
        ("spool/files.py", "beacon_otel.common.guard", "The spool imports nothing else"),
        ("delivery/worker.py", "beacon_otel.capture.processor", "Delivery never touches capture"),
        ("instrumentation/bottle.py", "beacon_otel.frameworks.hooks", "Instrumentation never imports"),
        ("devingest/faults.py", "beacon_otel.contract.event", "The dev ingest imports nothing else"),
        ("capture/processor.py", "fastapi", "Web frameworks are imported only by"),
    ],
)
def test_a_climbing_import_breaks_the_build(
    tmp_path: Path, module: str, bad_import: str, broken: str
) -> None:
    """One import against a rule, in a copy of the package: lint-imports fails and names the rule."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "src" / "beacon_otel" / module
    target.write_text(target.read_text() + f"\nimport {bad_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout.split("Broken contracts", 1)[-1], result.stdout


def test_at_most_ten_modules_sit_at_the_top() -> None:
    """The top of the package holds its faces and the old public paths, nothing else."""
    top = sorted(path.name for path in (ROOT / "src" / "beacon_otel").glob("*.py"))
    assert len(top) <= 10, top
    assert set(top) >= FACES
