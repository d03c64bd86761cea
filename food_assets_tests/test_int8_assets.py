"""int8 in the asset graph: the `onnx_<name>` asset writes the int8 file with its
`int8_accuracy` check, the leaderboard and `food-assets models` show what the serving rule
serves, and a broken calibration fails the check (at WARN or, if asked, at ERROR). These read the
shared `graph_run` (conftest.py); the int8 export itself is tested in test_int8.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from food_assets.cli import app
from food_assets.ml.errors import ConfigError
from food_assets.ml.inference import load_predictor
from food_assets_tests.rerun import rematerialized_export

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


def test_the_onnx_asset_writes_int8_with_its_check_and_the_leaderboard_shows_it(graph_run):
    """Breakage caught: the asset not yielding `int8_accuracy`, int8 files or metadata missing,
    or the leaderboard without the per-backend latency columns and the served export."""
    name = "custom_cnn"
    result = graph_run["result"]
    check = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }[(f"onnx_{name}", "int8_accuracy")]
    assert check.metadata["n_images"].value > 0
    folder = graph_run["data_dir"] / "artifacts" / f"onnx_{name}"
    assert {"model.onnx", "model_int8.onnx", "int8.json", "latency.json"} <= {
        p.name for p in folder.iterdir()
    }
    record = json.loads((folder / "int8.json").read_text())
    assert record["gate"]["passed"] is check.passed
    meta = result.asset_materializations_for_node(f"onnx_{name}")[0].metadata
    assert meta["int8_calibration_images"].value == record["quantization"]["calibration_images"]
    assert meta["int8_gate_passed"].value is check.passed and meta["latency_threads"].value >= 1
    table = result.output_for_node("leaderboard").set_index("model")
    row = table.loc[name]
    assert row["ort_int8_ms_b1"] > 0 and row["ort_fp32_ms_b32"] > 0 and row["latency_threads"] >= 1
    # The leaderboard's `served` is the serving rule's choice over every variant that passed
    # its gate (ONNX Runtime and OpenVINO, ADR 0021), with that variant's latency.
    from food_assets.ml.inference.serving import describe_variants

    variants = {r["variant"]: r for r in describe_variants(folder)}
    served = next(v for v, r in variants.items() if r["auto"])
    assert row["serving"] == (served.split("/")[1] if served.startswith("onnx") else served)
    passed = [r["ms_b1"] for r in variants.values() if r["verdict"] in ("passed", "reference")]
    assert row["latency_ms"] == variants[served]["ms_b1"] == min(passed)
    assert meta["auto_serves"].value == served
    # `food-assets models` says the same, in its `auto serves` column and variants table.
    out = CliRunner().invoke(app, ["--data-dir", str(graph_run["data_dir"]), "models"],
                             env={"COLUMNS": "200"})  # fmt: skip
    assert out.exit_code == 0, out.output
    line = next(x for x in out.stdout.splitlines() if f" {name} " in x)
    assert f" {served} (" in line, line
    auto_line = next(x for x in out.stdout.splitlines() if "<- auto" in x)
    assert served in auto_line, out.stdout


@pytest.mark.parametrize("fails_run", [False, True])
def test_a_broken_calibration_fails_int8_accuracy_and_int8_is_not_served(
    graph_run, monkeypatch, tmp_path, fails_run
):
    """Calibrating on one constant grey image: `int8_accuracy` fails; by default at WARN (the
    run and the leaderboard go on, serving fp32), with `int8_gate_fails_run` at ERROR (the run
    fails, the leaderboard is blocked). Either way `predict --precision int8` refuses it.
    Breakage caught: a gate that passes anything, a severity that ignores the setting, a check
    not declared blocking, or a failed int8 file served."""
    import dagster as dg
    from PIL import Image

    from food_assets.defs.resources import QualityGates
    from food_assets.ml.export import bundle_export

    name = "custom_cnn"
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    monkeypatch.setattr(bundle_export.quantize, "calibration_paths", lambda *a, **k: [str(grey)])
    resources = {
        **graph_run["resources"],
        "quality": QualityGates(accuracy={"sample/*": 0.0}, int8_gate_fails_run=fails_run),
    }
    out = graph_run["data_dir"] / "artifacts" / f"onnx_{name}"
    with rematerialized_export(graph_run, name, resources) as result:
        check = {
            (e.asset_key.to_user_string(), e.check_name): e
            for e in result.get_asset_check_evaluations()
        }[(f"onnx_{name}", "int8_accuracy")]
        assert not check.passed and "will not be served" in check.description
        with pytest.raises(ConfigError, match="failed its accuracy gate"):
            load_predictor(out, precision="int8")
        assert load_predictor(out).choice.precision != "int8"  # fp32 or OpenVINO bf16
        materialized = {
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        }
        if fails_run:
            assert check.severity == dg.AssetCheckSeverity.ERROR and not result.success
            assert "leaderboard" not in materialized
        else:
            assert check.severity == dg.AssetCheckSeverity.WARN and result.success
            table = result.output_for_node("leaderboard").set_index("model")
            assert "int8" not in table.loc[name, "serving"]
