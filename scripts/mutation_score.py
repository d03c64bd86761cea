"""The mutation score of `make mutation`: killed / (total - listed equivalents), per module.

    python scripts/mutation_score.py --globs        # the mutants `make mutation` runs, one a line
    python scripts/mutation_score.py [--fail-under 90]

Reads mutmut 3's results (`mutants/<file>.meta`: mutant name -> test exit code) in the repository
root. A mutant is killed when its tests failed or timed out (mutmut's own badge counts both);
it survived when they passed, and "no tests" means no selected test reached its function, which
counts against the score like a survivor. Mutants listed in docs/mutation_equivalents.txt are
left out of the denominator, but only while their mutated line is still the one recorded there:
mutmut numbers mutants per function, so an edit to the function renumbers them and an entry
that no longer matches is reported as stale instead of silently excusing another mutant.

The last line printed is `mutation score: NN %` (rounded down).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "docs" / "mutation_equivalents.txt"
ONNX = "food_assets.ml.export.onnx_export"

#: What is scored, by module. mutmut 3 mutates whole files; of onnx_export.py only the parity
#: functions count (the export itself is covered by the slower export tests, not by this run).
SCOPES: dict[str, list[str]] = {
    "splits": ["food_assets.ml.data.splits.*"],
    "scan": ["food_assets.ml.data.scan.*"],
    "metrics": ["food_assets.ml.evaluation.metrics.*"],
    "calibration": ["food_assets.ml.evaluation.calibration.*"],
    "predictor": ["food_assets.ml.inference.predictor.*"],
    "parity": [
        f"{ONNX}.x_check_parity__*",
        f"{ONNX}.x_run_session__*",
        f"{ONNX}.x_create_session__*",
        f"{ONNX}.x_default_threads__*",
        f"{ONNX}.x?ParityReport?*",  # methods are named xǁParityReportǁ<name>
    ],
    "quality": ["food_assets.ml.quality.*"],
    # Round 2 (#22): the rules that pick what a user is served, function by function.
    "champion": ["food_assets.tracking.runs.x_choose_champion__*"],
    "best_model": ["food_assets.catalog.x_best_model__*"],
    "compare": [
        "food_assets.ml.evaluation.compare.x_compare_models__*",
        "food_assets.ml.evaluation.compare.x__canonical__*",
        "food_assets.ml.evaluation.compare.x__number__*",
    ],
    "serving": ["food_assets.ml.inference.serving.*"],
    "tta": ["food_assets.ml.evaluation.tta.*"],
    "demo": [
        "food_assets.demo.service.x?DemoService?_classify__*",
        "food_assets.demo.service.x?DemoService?best_model__*",
    ],
}

KILLED = {"killed", "timeout"}


def _status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def _module_of(name: str) -> str | None:
    for module, globs in SCOPES.items():
        if any(fnmatch.fnmatchcase(name, g) for g in globs):
            return module
    return None


def _results() -> dict[str, tuple[str, str]]:
    """mutant name -> (status, source path) for every mutant in scope."""
    out: dict[str, tuple[str, str]] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        source = meta.relative_to(ROOT / "mutants").as_posix()[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            if _module_of(name):
                out[name] = (_status(code), source)
    return out


def _mutated_line(name: str, source: str) -> str:
    """The `+` lines of the mutant's diff, stripped and joined: what the entry must match."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=source)
    added = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(x for x in added if x)


def _equivalents() -> dict[str, tuple[str, str]]:
    """name -> (mutated line, reason) from `name | reason | mutated line` lines (the mutated
    line last: code may contain ` | ` itself)."""
    out = {}
    for raw in EQUIVALENTS.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, reason, mutated = (part.strip() for part in line.split(" | ", 2))
        out[name] = (mutated, reason)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--globs", action="store_true", help="print the mutant globs to run")
    parser.add_argument("--fail-under", type=float, default=None, metavar="PERCENT")
    args = parser.parse_args()
    if args.globs:
        print("\n".join(g for globs in SCOPES.values() for g in globs))
        return 0

    results = _results()
    if not results:
        print("no mutmut results under mutants/: run `make mutation`", file=sys.stderr)
        return 2
    unchecked = sorted(n for n, (s, _) in results.items() if s == "not checked")
    if unchecked:
        print(
            f"{len(unchecked)} mutants were never run (e.g. {unchecked[0]}): the run is incomplete"
        )
        return 2

    equivalent: set[str] = set()
    problems = []
    for name, (mutated, reason) in _equivalents().items():
        if name not in results:
            problems.append(f"stale: {name} is not a mutant any more")
        elif _mutated_line(name, results[name][1]) != mutated:
            problems.append(f"stale: {name} now mutates `{_mutated_line(name, results[name][1])}`")
        elif results[name][0] in KILLED:
            problems.append(f"listed as equivalent but killed: {name} ({reason})")
        else:
            equivalent.add(name)

    rows = []
    totals = Counter()
    for module in SCOPES:
        names = [n for n in results if _module_of(n) == module]
        if not names:
            continue
        c = Counter()
        for n in names:
            status = results[n][0]
            c["total"] += 1
            if status in KILLED:
                c["killed"] += 1
            elif n in equivalent:
                c["equivalent"] += 1
            elif status == "no tests":
                c["no tests"] += 1
            else:
                c["survived"] += 1  # survived, or suspicious / segfault: not a clean kill
        totals.update(c)
        rows.append((module, c))

    def score(c: Counter) -> float:
        scored = c["total"] - c["equivalent"]
        return 100.0 * c["killed"] / scored if scored else 100.0

    head = ("total", "killed", "survived", "no tests", "equiv.", "score")
    print(f"{'module':<12} " + " ".join(f"{h:>9}" for h in head))
    for module, c in [*rows, ("all", totals)]:
        figures = [c[k] for k in ("total", "killed", "survived", "no tests", "equivalent")]
        print(f"{module:<12} " + " ".join(f"{n:>9}" for n in figures) + f" {score(c):>8.1f}%")
    left = sorted(n for n, (s, _) in results.items() if s not in KILLED and n not in equivalent)
    if left:
        print(f"\nnot killed and not listed as equivalent ({len(left)}); `mutmut show <name>`:")
        for n in left:
            print(f"  {n}: {results[n][0]}")
    for p in problems:
        print(p)

    total = score(totals)
    print(f"\nmutation score: {math.floor(total)} %")
    if args.fail_under is not None and total < args.fail_under:
        print(f"below the {args.fail_under:g} % floor")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
