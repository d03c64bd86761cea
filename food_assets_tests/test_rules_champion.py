"""The rules that pick "the model": the registry champion (ADR 0012), the leaderboard's order,
and the default model of `predict` and the demo (`catalog.best_model`).

Each rule gets at least three candidates with different accuracies (so "least accurate wins"
gives another answer), a tie (so the tie-break decides), and its threshold at the limit and
just past it. Self-contained: only public functions, so these tests survive modules moving.
"""

from __future__ import annotations

import json
import math

import pytest

from food_assets import catalog, layout
from food_assets.ml.errors import ConfigError
from food_assets.ml.evaluation.compare import compare_models
from food_assets.tracking.runs import Candidate, choose_champion

# -- the champion (tracking.choose_champion) -----------------------------------------------------


def _c(model: str, acc: float | None, *, floor: float | None = 0.5, passed: bool = True,
       version: int | None = 1) -> Candidate:  # fmt: skip
    return Candidate(model, acc, floor, passed, version)


#: Three eligible models of different accuracies, each ineligible kind, and none of the
#: ineligible ones less accurate than the eligible ones (so ignoring eligibility changes the
#: answer): the most accurate failed its check, the next has no version, the next is a
#: "passed" record under its floor, the next was skipped.
FIELD = [
    _c("mid", 0.70, version=2),
    _c("failed_check", 0.99, passed=False, version=3),
    _c("low", 0.60, version=4),
    _c("unregistered", 0.95, version=None),
    _c("under_floor", 0.90, floor=0.91, version=5),
    _c("high", 0.80, version=6),
    Candidate("skipped", None, None, False, None, "skipped"),
    _c("no_floor", 0.98, floor=None, version=7),
]


def test_the_champion_is_the_most_accurate_eligible_model() -> None:
    """Three eligible models (0.6, 0.7, 0.8) among five more accurate ineligible ones.
    Breakage seen failing: the sort reversed (`(c.acc, c.model)`: `low` wins), eligibility
    ignored (`failed_check` wins), `version is not None` dropped (`unregistered` wins),
    `acc >= floor` dropped (`under_floor` wins), `floor is not None` dropped (`no_floor`)."""
    champion = choose_champion(FIELD)
    assert champion is not None
    assert (champion.model, champion.version, champion.acc) == ("high", 6, 0.80)
    # Whatever the input order.
    assert choose_champion(list(reversed(FIELD))).model == "high"
    # Without `high`, the next most accurate eligible one; without any eligible one, none.
    assert choose_champion([c for c in FIELD if c.model != "high"]).model == "mid"
    assert choose_champion([c for c in FIELD if c.model not in {"high", "mid", "low"}]) is None
    assert choose_champion([]) is None


def test_a_tie_goes_to_the_name_that_sorts_first() -> None:
    """Equal accuracies: the first name, whatever the input order, and only among the tied
    best (a less accurate model that sorts first does not win). Breakage seen failing: the
    name order reversed (`zeta`), the tie-break dropped with the input order kept."""
    tied = [_c("zeta", 0.8), _c("alpha", 0.8), _c("aardvark", 0.7), _c("mu", 0.8)]
    assert choose_champion(tied).model == "alpha"
    assert choose_champion(list(reversed(tied))).model == "alpha"


def test_a_zero_accuracy_ranks_last_not_first() -> None:
    """An eligible model at 0.0 (floor 0.0) is the least accurate, not a missing value read as
    perfect. Breakage seen failing (a mutmut survivor): `-(c.acc or 1.0)` in the sort key."""
    field = [_c("a_zero", 0.0, floor=0.0), _c("b_half", 0.5), _c("c_low", 0.3, floor=0.2)]
    assert choose_champion(field).model == "b_half"


@pytest.mark.parametrize(
    ("acc", "floor", "eligible"),
    [
        (0.5, 0.5, True),  # exactly at the floor: passes (acc >= floor)
        (0.5 - 1e-9, 0.5, False),  # just under
        (0.5 + 1e-9, 0.5, True),  # just over
        (0.0, 0.0, True),
        (1.0, 1.0, True),
        (0.99, 1.01, False),  # a floor nobody can reach
    ],
)
def test_the_floor_boundary(acc: float, floor: float, eligible: bool) -> None:
    """Breakage seen failing: `acc > floor` (the exact-floor rows), `acc >= floor - eps`."""
    candidate = _c("m", acc, floor=floor)
    assert candidate.eligible is eligible
    assert (choose_champion([candidate]) is not None) is eligible


@pytest.mark.parametrize(
    ("fields", "eligible"),
    [
        ({}, True),
        ({"passed": False}, False),
        ({"version": None}, False),
        ({"version": 0}, True),  # version numbers are ints; 0 is a version, not "none"
        ({"floor": None}, False),
    ],
)
def test_each_eligibility_condition_alone(fields: dict, eligible: bool) -> None:
    """One condition broken at a time. Breakage seen failing: `and` turned into `or`, a
    truthiness test on the version (`and self.version`)."""
    assert _c("m", 0.7, **fields).eligible is eligible
    assert Candidate("m", None, 0.5, True, 1).eligible is False  # no accuracy: never


# -- the leaderboard's order (compare.compare_models) --------------------------------------------


def test_the_leaderboard_ranks_by_accuracy_then_name_missing_last() -> None:
    """Four accuracies, a tie and two models without one. Breakage seen failing: ascending
    order, ties by name reversed, missing accuracies first (`na_position="first"`), the name
    key dropped (input order kept for the tie)."""
    rows = [
        {"model": "c_mid", "acc_top1": 0.6},
        {"model": "z_unscored"},
        {"model": "b_tie", "acc_top1": 0.8},
        {"model": "d_low", "acc_top1": 0.2},
        {"model": "a_unscored", "acc_top1": None},
        {"model": "a_tie", "acc_top1": 0.8},
        {"test/acc_top1": 0.9, "name": "best"},  # metrics.json keys and the `name` alias
    ]
    table = compare_models(rows).table
    assert list(table["model"]) == [
        "best", "a_tie", "b_tie", "c_mid", "d_low", "a_unscored", "z_unscored",
    ]  # fmt: skip
    assert list(table["acc_top1"][:5]) == [0.9, 0.8, 0.8, 0.6, 0.2]
    assert table["acc_top1"][5:].isna().all()
    # The Markdown table follows the same order, best first, missing accuracy shown as "-".
    lines = compare_models(rows).markdown.splitlines()[2:]
    assert [line.split("|")[1].strip() for line in lines] == list(table["model"])
    assert lines[0].split("|")[2].strip() == "90.0 %"
    assert lines[-1].split("|")[2].strip() == "-"


def test_the_leaderboard_plot_axis_follows_the_majority_of_scored_models() -> None:
    """Latency unless more scored models report a size; an unscored model does not vote.
    Breakage seen failing: `n_latency > n_params` (the tie row), counting unscored rows."""

    def axis(rows):  # noqa: E306
        return compare_models(rows).x_axis

    lat, par = {"latency_ms": 1.0}, {"params": 1e6}
    assert axis([{"model": "a", "acc_top1": 0.5, **lat, **par}]) == "latency_ms"  # tie: latency
    assert axis([{"model": "a", "acc_top1": 0.5, **par}, {"model": "b", "acc_top1": 0.4, **lat,
                 **par}]) == "params"  # fmt: skip
    assert axis([{"model": "a", "acc_top1": 0.5, **lat},
                 {"model": "b", **par}, {"model": "c", **par}]) == "latency_ms"  # fmt: skip
    assert axis([{"model": "a", "acc_top1": 0.5}]) is None


def test_the_leaderboard_keeps_extra_columns_text_and_its_own_columns() -> None:
    """Extra keys become columns after the known ones (also in the Markdown), `test/` is
    stripped once, the served precision is text ("-" when missing), the index is not a column.
    Breakages seen failing (mutmut survivors): `key in extra` / `extra.append(None)`,
    `split("/")` or `rsplit` in `_canonical`, `str(None)` for a missing `serving`, a text
    column left unconverted (`key == "model"`), `reset_index(drop=False)`."""
    from food_assets.ml.evaluation.compare import LEADERBOARD

    result = compare_models(
        [
            {"model": "a", "acc_top1": 0.9, "test/per_class/f1": 0.5, "serving": None},
            {"model": "b", "acc_top1": 0.5, "tta_gain": 0.01, "serving": 8},
        ]
    )
    table = result.table
    assert list(table.columns) == [*(c.key for c in LEADERBOARD), "per_class/f1", "tta_gain"]
    assert table["per_class/f1"].tolist()[0] == 0.5 and math.isnan(table["tta_gain"][0])
    assert table["serving"].tolist() == [None, "8"]
    header, _, row_a, row_b = result.markdown.splitlines()
    assert "per_class/f1" in header and "tta_gain" in header
    cells = [c.strip() for c in row_a.split("|")[1:-1]]
    assert cells[[h.strip() for h in header.split("|")[1:-1]].index("served")] == "-"
    assert row_b.split("|")[-2].strip() == "0.01"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "^compare_models needs at least one evaluated model; got none$"),
        ([{"acc_top1": 0.5}], "no 'model' name"),
        ([{"model": "a"}, {"model": "a"}], "appears twice"),
        ([{"model": "a", "acc_top1": "high"}], "^model 'a': acc_top1 must be a number"),
    ],
)
def test_the_leaderboard_refuses_bad_rows(rows, message) -> None:
    with pytest.raises(ConfigError, match=message):
        compare_models(rows)


# -- the default model of `predict` and the demo (catalog.best_model) ----------------------------


def _entry(name: str, acc) -> catalog.MaterializedModel:
    metrics = {} if acc is None else {"test/acc_top1": acc}
    return catalog.MaterializedModel(name, None, None, metrics)


def test_the_default_model_is_the_most_accurate_then_the_first_name() -> None:
    """Breakage seen failing: the sort reversed (`low` wins), unevaluated models first
    (`unevaluated` wins), the tie-break reversed (`b_tie` over `a_tie`)."""
    accuracies = {"mid": 0.5, "unevaluated": None, "low": 0.1, "high": 0.9,
                  "broken": float("nan"), "flag": True}  # fmt: skip
    models = [_entry(name, acc) for name, acc in accuracies.items()]
    assert catalog.best_model(models).name == "high"
    assert catalog.best_model([m for m in models if m.name != "high"]).name == "mid"
    tied = [_entry("b_tie", 0.7), _entry("a_tie", 0.7), _entry("c", 0.2)]
    assert catalog.best_model(tied).name == "a_tie"
    assert catalog.best_model(list(reversed(tied))).name == "a_tie"
    # Without any evaluation: the first name; without any model: none.
    assert catalog.best_model([_entry("z", None), _entry("y", "0.9")]).name == "y"
    assert catalog.best_model([]) is None
    # A zero accuracy is an accuracy (ranks before unevaluated), not "missing".
    assert catalog.best_model([_entry("a_none", None), _entry("zero", 0.0)]).name == "zero"
    # ... and the least accurate one (mutmut survivor `-(m.accuracy or 1.0)`).
    assert catalog.best_model([_entry("a_zero", 0.0), _entry("b", 0.5)]).name == "b"


def test_accuracy_reads_only_finite_numbers() -> None:
    """Breakage seen failing: a bool or NaN accepted as an accuracy."""
    assert _entry("m", 0.25).accuracy == 0.25
    assert _entry("m", 1).accuracy == 1.0
    for bad in (None, True, float("nan"), math.inf, "0.9"):
        assert _entry("m", bad).accuracy is None


def _materialize(root, name: str, acc: float | None) -> None:
    """What `model_<name>` and `evaluation_<name>` leave on disk, as the catalog reads it."""
    card = layout.card_file(root, name)
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text("{}")
    if acc is not None:
        metrics = layout.metrics_file(root, name)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"test/acc_top1": acc}))


def test_the_demo_and_predict_default_to_the_same_best_model_on_disk(data_dir) -> None:
    """Read from a data folder: four models, one unevaluated and the best one tied. The demo's
    default and `catalog.best_model(list_materialized(...))` (what `predict` calls) agree.
    Breakage seen failing: the demo defaulting to the first name (`a_low`)."""
    from food_assets.demo.service import DemoService

    for name, acc in (("a_low", 0.3), ("d_tie", 0.75), ("c_tie", 0.75), ("b_none", None)):
        _materialize(data_dir, name, acc)
    found = catalog.list_materialized(data_dir)
    assert [m.name for m in found] == ["a_low", "b_none", "c_tie", "d_tie"]
    assert catalog.best_model(found).name == "c_tie"
    service = DemoService(data_dir)
    assert service.default_model == "c_tie"
    # No model at all: no default (and no error); a named model overrides the rule.
    empty = data_dir / "empty"
    empty.mkdir()
    assert DemoService(empty).default_model is None
    assert DemoService(data_dir, default_model="a_low").default_model == "a_low"
