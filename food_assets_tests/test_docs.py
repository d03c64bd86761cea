"""The docs point at things that exist: tests, files, make targets and CLI commands.

A rename or a move (a test, a module, a Makefile target, a command) that leaves the README or
`docs/` pointing at nothing fails here instead of misleading the next reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
TEXT = {p.relative_to(ROOT).as_posix(): p.read_text() for p in DOCS}


def _all_docs() -> str:
    return "\n".join(TEXT.values())


def _test_functions() -> dict[str, set[str]]:
    out = {}
    for path in (ROOT / "food_assets_tests").glob("test_*.py"):
        out[path.name] = set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    return out


def test_docs_name_tests_that_exist() -> None:
    """Breakage caught: a test renamed or deleted while the docs still cite it as proof."""
    tests = _test_functions()
    missing = []
    for file, name in re.findall(r"(test_\w+\.py)(?:::(\w+))?", _all_docs()):
        if file not in tests:
            missing.append(file)
        # Docs may cut a long name short in a table; a prefix of a real test still names it.
        elif name and not any(t.startswith(name) for t in tests[file]):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs cite tests that do not exist: {sorted(set(missing))}"


def test_docs_name_files_that_exist() -> None:
    """Breakage caught: a module, config or script moved while the docs keep the old path."""
    missing = []
    pattern = r"`((?:food_assets|food_assets_tests|configs|benchmarks|scripts|docs)/[^`\s]*)`"
    for path in set(re.findall(pattern, _all_docs())):
        if "{" in path or "=" in path or "<" in path:
            continue  # a template (`{a,b}.jpg`, `<name>`) or a tag such as food_assets/cli=train
        if not (path.endswith("/") or Path(path).suffix):
            continue  # a tag key (`food_assets/family`), not a path
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"docs name paths that do not exist: {sorted(missing)}"


def test_readme_make_targets_exist() -> None:
    """Breakage caught: the README telling users to run a target the Makefile lacks."""
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    # `make x` in backticks or at the start of a line of a code block; prose ("make its") aside.
    used = set(re.findall(r"(?:`|^)make ([a-z][\w-]*)", TEXT["README.md"], re.M))
    assert used, "the README shows no make command"
    assert used <= targets, f"README uses missing make targets: {sorted(used - targets)}"


@pytest.mark.parametrize("doc", ["README.md", "docs/cli.md"])
def test_documented_cli_commands_exist(doc: str) -> None:
    """Breakage caught: a `food-assets` command renamed or dropped while the docs show it."""
    import typer

    from food_assets.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    used = set(re.findall(r"food-assets ([a-z][\w-]*)", TEXT[doc]))
    assert used, f"{doc} shows no food-assets command"
    assert used <= commands, f"{doc} shows missing commands: {sorted(used - commands)}"
