"""`food-assets run` (what `make run` calls): the terminal during the run and the summary after.

The summary's wording is tested on plain `RunOutcome`s (fast); the command itself runs as a
subprocess on a tiny config, as a user runs it: the whole graph (one model trains, the others
decline at once), then a run that fails its accuracy floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from food_assets.cli.summary import CheckLine, RunOutcome, duration, render
from food_assets_tests.conftest import tiny_run_config
from food_assets_tests.leaderboard_run import MISSING_WEIGHTS

ROWS = [
    {"model": "efficientnet_lite0", "acc_top1": 0.983, "acc_top1_ci_low": 0.95,
     "acc_top1_ci_high": 1.0, "latency_ms": 3.14, "serving": "int8"},
    {"model": "custom_cnn", "acc_top1": 0.833, "acc_top1_ci_low": 0.733,
     "acc_top1_ci_high": 0.917, "latency_ms": 2.0, "serving": "fp32"},
    {"model": "resnet50", "acc_top1": 0.4, "acc_top1_ci_low": 0.3,
     "acc_top1_ci_high": 0.5, "latency_ms": float("nan"), "serving": None},
]  # fmt: skip
CLIP_WHY = (
    "CLIP weights ViT-B-32/openai are not on this machine: the cache has no file. Set the "
    "config key `checkpoint` to a local copy of that file."
)


def _outcome(**kw) -> RunOutcome:
    base = dict(
        run_id="r1",
        success=True,
        seconds=243.0,
        steps=30,
        rows=ROWS,
        skipped={"clip_zero_shot": CLIP_WHY, "clip_linear_probe": CLIP_WHY},
        champion="efficientnet_lite0",
        champion_uri="models:/food_assets.efficientnet_lite0@champion",
        eligible=["custom_cnn", "efficientnet_lite0"],
        checks=[
            CheckLine("evaluation_resnet50", "accuracy_above_floor", "failed", "top-1 0.4 vs 0.5"),
            *[
                CheckLine(f"{kind}_{m}", "c", "not evaluated", f"not evaluated: {m} skipped")
                for m in ("clip_zero_shot", "clip_linear_probe")
                for kind in ("evaluation", "gradcam")
            ],
        ],
        log_path="data/logs/run.log",
        commands=("run", "predict", "demo"),
    )
    return RunOutcome(**{**base, **kw})


def test_summary_names_the_champion_and_shows_the_table() -> None:
    """The leaderboard in its order with top-1, interval, latency and served precision; the
    champion with its reason; the failed check; CLIP's not-evaluated checks once for both
    models (same reason) with how to fix it; the next commands.

    Breakage tried: the champion line dropped (fails); the table's CI column printing the
    accuracy twice (fails on the interval); grouping by model instead of reason (two "not
    evaluated" lines: fails); `serve` offered while the CLI has no such command (fails)."""
    text = "\n".join(render(_outcome()))
    lines = text.splitlines()
    assert lines[0] == "run r1 succeeded in 4 min 03 s (30 steps)"
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["model", "top-1"])
    table = [line.split() for line in lines[header + 1 : header + 6]]
    assert table[0] == ["efficientnet_lite0", "0.983", "[0.950,", "1.000]", "3.1", "ms", "int8"]
    assert table[1] == ["custom_cnn", "0.833", "[0.733,", "0.917]", "2.0", "ms", "fp32"]
    assert table[2] == ["resnet50", "0.400", "[0.300,", "0.500]", "-", "eager", "fp32"]
    assert table[3:] == [["clip_linear_probe", "skipped"], ["clip_zero_shot", "skipped"]]
    assert (
        "champion: efficientnet_lite0: the highest test top-1 (0.983) of the 2 models that "
        "passed their accuracy floor (ADR 0012); load it as "
        "models:/food_assets.efficientnet_lite0@champion"
    ) in lines
    assert "  FAILED: evaluation_resnet50 accuracy_above_floor: top-1 0.4 vs 0.5" in lines
    not_evaluated = [line for line in lines if "not evaluated" in line]
    assert not_evaluated == [
        "  not evaluated: 4 checks of clip_linear_probe, clip_zero_shot: CLIP weights "
        "ViT-B-32/openai are not on this machine"
    ]
    assert "Set the config key `checkpoint`" in text
    assert "food-assets predict PHOTO.jpg --model champion" in text and "make ui" in text
    assert "food-assets serve" not in text
    assert "food-assets serve" in "\n".join(render(_outcome(commands=("predict", "serve"))))
    assert lines[-2:] == ["full log: data/logs/run.log", "Dagster UI: `make ui` -> Runs -> r1"]


def test_summary_champion_reasons() -> None:
    """One eligible model is "the only model"; none is "champion: none"; no leaderboard in the
    run prints no champion line. Breakage tried: counting eligible models off by one (fails)."""
    one = render(_outcome(eligible=["efficientnet_lite0"]))
    assert any("the only model that passed its accuracy floor" in line for line in one)
    none = render(_outcome(champion="none", eligible=[]))
    assert any(line.startswith("champion: none") for line in none)
    no_board = render(_outcome(champion=None, rows=None))
    assert not any(line.startswith(("champion", "leaderboard")) for line in no_board)


def test_summary_of_a_failed_run_is_the_step_and_its_reason() -> None:
    """A failed run: its steps and one-line reasons and where the log is; no table, no
    champion. Breakage tried: rendering the table for a failed run (fails on the length)."""
    lines = render(
        _outcome(
            success=False,
            failures=[("evaluation_custom_cnn", "accuracy_above_floor failed: top-1 0.1")],
            not_run=3,
        )
    )
    assert lines == [
        "run r1 FAILED after 4 min 03 s",
        "  evaluation_custom_cnn: accuracy_above_floor failed: top-1 0.1",
        "  3 step(s) did not run: a step they depend on failed",
        "full log: data/logs/run.log",
        "Dagster UI: `make ui` -> Runs -> r1",
    ]


@pytest.mark.parametrize(
    "seconds, shown", [(0.4, "0 s"), (59.4, "59 s"), (60, "1 min 00 s"), (3725, "1 h 02 min")]
)
def test_duration(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


# -- the command, as a user runs it ---------------------------------------------------------------


def _tiny_config(tmp_path: Path, *, floors: bool) -> Path:
    """The whole graph: custom_cnn trains (2 epochs, 48 px), every other model declines."""
    ops = tiny_run_config()["ops"]
    for key, op in ops.items():
        if key.startswith("model_") and key != "model_custom_cnn":
            op["config"].update(weights=MISSING_WEIGHTS, on_missing_weights="skip")
    config: dict = {"ops": ops}
    if not floors:  # two epochs leave the model near chance: gate nothing
        config["resources"] = {"quality": {"config": {"accuracy": {"sample/*": 0.0}}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _food_assets(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FOOD_ASSETS_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("food-assets")
    return subprocess.run(
        [str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_food_assets_run_prints_steps_then_the_summary(tmp_path: Path) -> None:
    """The whole graph on a tiny config: stderr is one line per step (the evaluation's top-1,
    the export's ms, the epochs), no library noise; stdout is the summary naming the champion,
    under a bound on lines; the full log is in the file it names.

    Would fail with (not run on purpose: each run takes minutes here): `--verbose` semantics as
    the default (Dagster's ~500-line event log on stderr, over the bound); the log redirection
    removed (Lightning's "GPU available" on stderr); no summary (no champion line). Seen
    before this change: `dg launch` printed about 550 lines ending on RUN_SUCCESS."""
    config = _tiny_config(tmp_path, floors=False)
    proc = _food_assets(tmp_path, "run", "--config", str(config))
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err[-3000:] + out[-3000:]
    err_lines = err.splitlines()
    assert len(err_lines) <= 80, err
    assert len(out.splitlines()) <= 60, out
    for noise in ("Traceback", "DEBUG", "GPU available", "Warning", "Successfully registered"):
        assert noise not in err + out
    step = {line.split()[1]: line for line in err_lines[1:] if len(line.split()) > 2}
    assert " top-1 " in step["evaluation_custom_cnn"] and "[" in step["evaluation_custom_cnn"]
    assert " ms per image" in step["onnx_custom_cnn"]
    assert sum("epoch " in line and "/2: val top-1" in line for line in err_lines) == 2
    assert "skipped" in step["model_resnet50"]
    assert "champion: custom_cnn: the only model that passed its accuracy floor" in out
    assert "  model       top-1" in out or "  model " in out
    assert any(line.split()[:1] == ["custom_cnn"] for line in out.splitlines())
    log = next(line for line in out.splitlines() if line.startswith("full log: "))
    log_file = tmp_path / log.removeprefix("full log: ")
    assert "RUN_SUCCESS" in log_file.read_text()


@pytest.mark.slow
def test_food_assets_run_failure_is_the_step_and_its_reason(tmp_path: Path) -> None:
    """The sample's accuracy floor fails the two-epoch model: exit 1, the failed step with the
    check's one-line reason and where the log is, no traceback anywhere on the terminal.

    Would fail with (not run on purpose): Dagster's multi-line check error as the reason (the
    line would read "DagsterAssetCheckFailedError: 1 blocking asset check failed", not the
    check's description, which the first version of this summary printed); a summary that
    raises on a failed run (a traceback)."""
    config = _tiny_config(tmp_path, floors=True)
    select = "key:food_images_raw or key:food_splits or key:*_custom_cnn"
    proc = _food_assets(tmp_path, "run", "-c", str(config), "--select", select)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run ") and " FAILED after " in lines[0]
    assert lines[1].startswith(
        "  evaluation_custom_cnn: accuracy_above_floor failed: top-1 "
    ) and lines[1].endswith("(sample)")
    assert lines[-2].startswith("full log: data/logs/run_")
    failed = [line for line in proc.stderr.splitlines() if " FAILED " in line]
    assert len(failed) == 1 and "evaluation_custom_cnn" in failed[0]


# -- the lines while it runs --------------------------------------------------------------------


def test_epoch_lines_count_from_one_and_survive_pickling() -> None:
    """`EpochProgress` reports each validation epoch as "epoch k/N" counting from 1; a pickled
    copy (what `ddp_spawn` sends to its workers) reports nothing instead of failing on the
    caller's log handle. Breakage tried: the 0-based epoch shown (fails); the report callable
    kept in the pickle (a lambda: pickling fails)."""
    import pickle

    from food_assets.ml.training.progress import EpochProgress, epoch_line

    seen: list[str] = []
    progress = EpochProgress(lambda line: seen.append(line), total_epochs=4)
    progress.log_metrics({"train/loss": 1.0, "epoch": 0})  # not a validation epoch
    progress.log_metrics({"val/acc_top1": 0.5, "val/loss": 1.25, "epoch": 1})
    assert seen == ["epoch 2/4: val top-1 0.500, val loss 1.250"]
    assert epoch_line({"val/acc_top1": 0.25, "epoch": 0}, None) == "epoch 1: val top-1 0.250"
    copy = pickle.loads(pickle.dumps(progress))
    copy.log_metrics({"val/acc_top1": 0.5, "epoch": 2})
    assert len(seen) == 1


@pytest.mark.parametrize(
    "asset, meta, shown",
    [
        ("evaluation_x", {"acc_top1": 0.8333, "acc_top1_ci95": "[0.733, 0.917]"},
         "top-1 0.833 [0.733, 0.917]"),
        ("onnx_x", {"ort_fp32_ms_b1": 2.14, "ort_int8_ms_b1": 0.96},
         "ONNX Runtime fp32 2.1 ms, int8 1.0 ms per image"),
        ("onnx_x", {"ort_fp32_ms_b1": 2.14}, "ONNX Runtime fp32 2.1 ms per image"),
        ("model_x", {"skipped": True, "reason": "no weights\nsecond line"}, "skipped: no weights"),
        ("model_x", {"best_val_acc": 0.5}, "best val top-1 0.500"),
        ("leaderboard", {"champion": "custom_cnn"}, "champion: custom_cnn"),
        ("food_splits", {"dagster/row_count": 64}, "64 rows"),
        ("onnx_x", {}, ""),
    ],
)  # fmt: skip
def test_key_figure_per_kind_of_step(asset: str, meta: dict, shown: str) -> None:
    """The one figure on each step's line. Breakage tried: the export's int8 latency under the
    fp32 label (fails); a skip reason's second line kept (fails)."""
    from food_assets.cli.progress import key_figure

    assert key_figure(asset, meta) == shown


def _record(step: str, kind: str | None = None, message: str = "", **data):
    """A log record as Dagster's logging hands it to a logger: `dagster_meta` with the event."""
    import logging
    from types import SimpleNamespace

    event = None
    if kind is not None:
        event = SimpleNamespace(event_type_value=kind, event_specific_data=SimpleNamespace(**data))
    record = logging.LogRecord("dagster", logging.INFO, __file__, 0, message, None, None)
    record.dagster_meta = {"dagster_event": event, "step_key": step, "orig_message": message}
    return record


def test_step_lines_one_line_for_a_quick_step_two_for_a_slow_one() -> None:
    """A quick step is one `done` line; a step still running after `started_after` gets its
    `started` line then (a timer), its epochs, and its end; a quick check-only step that passed
    is not shown, a slow one is closed by a line. Breakage tried: the `started` line printed at
    once for every step (the quick step has two lines: fails); the announced check-only step
    left without its end line (fails)."""
    import io
    import time as clock

    from food_assets.cli.progress import StepLines

    out = io.StringIO()
    lines = StepLines(out, started_after=0.2)
    passed = {"passed": True, "description": "ok", "check_name": "c"}

    lines.handle(_record("food_splits", "STEP_START"))
    lines.handle(_record("food_splits", "STEP_SUCCESS"))
    lines.handle(_record("food_splits_check", "STEP_START"))
    lines.handle(_record("food_splits_check", "ASSET_CHECK_EVALUATION", **passed))
    lines.handle(_record("food_splits_check", "STEP_SUCCESS"))
    lines.handle(_record("model_x", "STEP_START"))
    clock.sleep(0.5)
    lines.handle(_record("model_x", message="epoch 1/2: val top-1 0.500"))
    lines.handle(_record("slow_check", "STEP_START"))
    clock.sleep(0.5)
    lines.handle(_record("slow_check", "ASSET_CHECK_EVALUATION", **passed))
    lines.handle(_record("slow_check", "STEP_SUCCESS"))
    lines.handle(_record("model_x", "STEP_SUCCESS"))
    shown = [line.split(None, 1)[1].split() for line in out.getvalue().splitlines()]
    assert [s[:2] for s in shown] == [
        ["food_splits", "done"],
        ["model_x", "started"],
        ["model_x", "epoch"],
        ["slow_check", "started"],
        ["slow_check", "done"],
        ["model_x", "done"],
    ]
    assert shown[4][-3:] == ["no", "check", "failed"]
