"""The layering holds: `food_assets/ml` imports neither Dagster nor MLflow nor the wiring, the
whole package keeps its layers, and no import cycle exists anywhere in it.

The contracts live in pyproject.toml (`[tool.importlinter]`); `lint-imports` checks them. The
other tests prove the contracts have teeth: the same command on a copy of the package with one
forbidden import added (at module level, inside a function, under TYPE_CHECKING) must fail and
name it. A string that names a module (`importlib.import_module("food_assets...")`) is an import
import-linter cannot see; `test_no_string_reference_hides_a_cycle` sees it.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    """Breakage caught: any `import dagster`/`mlflow` (or of `food_assets.defs.assets`,
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


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "food_assets", tmp_path / "food_assets", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


#: (file to edit, code appended, the contract that must break, the import it must name).
#: `layout` is near the bottom: `cli` imports it, so `layout` importing `cli` back is a cycle.
BREAKAGES = {
    "module level": (
        "layout.py",
        "\nimport food_assets.cli  # noqa: E402,F401\n",
        "No import cycles anywhere in food_assets",
        "food_assets.layout -> food_assets.cli",
    ),
    "inside a function": (
        "layout.py",
        "\n\ndef _late():\n    from food_assets.cli import common  # noqa: F401\n",
        "No import cycles anywhere in food_assets",
        "food_assets.layout -> food_assets.cli",
    ),
    "under TYPE_CHECKING": (
        "layout.py",
        "\nfrom typing import TYPE_CHECKING  # noqa: E402\n\nif TYPE_CHECKING:\n"
        "    from food_assets.cli import common  # noqa: F401\n",
        "No import cycles anywhere in food_assets",
        "food_assets.layout -> food_assets.cli",
    ),
    # No cycle (the demo never reaches the composition root): only the layers contract can
    # catch it.
    "a layer imported upwards": (
        "definitions.py",
        "\n\ndef _late():\n    from food_assets.demo import service  # noqa: F401\n",
        "food_assets layers",
        "food_assets.definitions -> food_assets.demo.service",
    ),
    # Dagster code stays in defs/ (ADR 0026): a reader outside it may not import it.
    "Dagster code imported outside the root": (
        "resolver.py",
        "\n\ndef _late():\n    from food_assets.defs import placement  # noqa: F401\n",
        "only the composition root and the launcher import food_assets.defs",
        "food_assets.resolver -> food_assets.defs.placement",
    ),
    # The MLflow package imports no Dagster (a serving image has none).
    "Dagster in the MLflow package": (
        "tracking/runs.py",
        "\n\ndef _late():\n    import dagster  # noqa: F401\n",
        "tracking, resolver, catalog, storage and layout import no Dagster",
        "food_assets.tracking.runs -> dagster",
    ),
    # Inside ml: models may not import training (training imports models).
    "ml.models importing ml.training": (
        "ml/models/zoo.py",
        "\n\ndef _late():\n    from food_assets.ml.training import fit  # noqa: F401\n",
        "No import cycles anywhere in food_assets",
        "- .models -> .training",
    ),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_a_cycle_or_an_upward_import_breaks_a_whole_package_contract(
    case: str, tmp_path: Path
) -> None:
    """Breakage caught: the whole-package contracts dropped or narrowed back to `ml/`, the
    layers list reordered so that a lower layer may import a higher one, or import-linter told
    to skip TYPE_CHECKING imports (`exclude_type_checking_imports`): each case then passes."""
    file, code, contract, edge = BREAKAGES[case]
    copy = _copy(tmp_path)
    target = copy / "food_assets" / file
    target.write_text(target.read_text() + code)
    proc = _lint(copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    broken = proc.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, proc.stdout
    assert edge in broken, proc.stdout


_MODULE_NAME = re.compile(r"^(food_assets(?:\.\w+)+)(?::\w+)?$")


def _string_references() -> list[tuple[str, str]]:
    """(module, module it names in a string constant) for every `food_assets...` string."""
    found = []
    for path in sorted((ROOT / "food_assets").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = _MODULE_NAME.match(node.value)
                if match and match.group(1) != module:
                    found.append((module, match.group(1)))
    return found


def test_no_string_reference_hides_a_cycle() -> None:
    """A string naming a module (a plugin list, a `module:attr` hook) is an import that
    import-linter does not see. None may name a module outside the naming module's own package
    that imports it back: that is a cycle between packages (the zoo's former
    `Ref("food_assets.ml.training.fit:fit_lightning")`: training imports models). Within one
    package a lazy plugin list (the registry's zoo modules) is the registry pattern.

    Breakage caught: putting that `Ref` back in `ml/models/zoo.py` (models -> training by
    string, training -> models by import)."""
    import grimp

    graph = grimp.build_graph("food_assets", cache_dir=None)
    refs = _string_references()
    assert ("food_assets.definitions", "food_assets.defs.assets.models") in refs  # the scan works
    hidden = []
    for module, named in refs:
        package = module.rsplit(".", 1)[0]
        if named.startswith(package + ".") or named not in graph.modules:
            continue
        if module.startswith(named + "."):  # its own ancestor (a logger name): not a sibling
            continue
        # The two siblings under the common ancestor, as acyclic_siblings compares them.
        a, b = module.split("."), named.split(".")
        common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)
        mine, theirs = ".".join(a[: common + 1]), ".".join(b[: common + 1])
        if graph.chain_exists(importer=theirs, imported=mine, as_packages=True):
            hidden.append(f"{module} names {named}, and {theirs} imports {mine}")
    assert not hidden, hidden


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
