"""The layering holds: `food_assets/ml` imports neither Dagster nor MLflow nor the wiring.

The contracts live in pyproject.toml (`[tool.importlinter]`); `lint-imports` checks them. The
second test proves the contract has teeth: the same command on a copy of the package with one
forbidden import added must fail and name it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH=cwd puts the package under cwd ahead of the editable install, so a copy is
    # analysed as the copy; --no-cache keeps one run from reading another's graph.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_are_kept() -> None:
    """Breakage caught: any `import dagster`/`mlflow` (or of `food_assets.assets`,
    `resources`, `cli`, ...) under food_assets/ml."""
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_forbidden_import_in_ml_breaks_the_contract(tmp_path: Path) -> None:
    """Breakage caught: a contract that no longer forbids anything (wrong source module, an
    emptied forbidden list, include_external_packages switched off)."""
    shutil.copytree(
        ROOT / "food_assets", tmp_path / "food_assets", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "food_assets" / "ml" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport mlflow  # noqa: E402,F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout
    assert "food_assets.ml.errors -> mlflow" in proc.stdout


def test_ruff_lint_and_format_are_clean() -> None:
    """Breakage caught: code that `make lint` would reject (an unused import, timm imported
    outside ml/models, an unformatted file) landing because CI only runs the tests."""
    ruff = Path(sys.executable).with_name("ruff")
    paths = ["food_assets", "food_assets_tests", "benchmarks"]
    for args in (["check", *paths], ["format", "--check", *paths]):
        proc = subprocess.run(
            [str(ruff), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"ruff {args[0]}:\n{proc.stdout}{proc.stderr}"
