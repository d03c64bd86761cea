"""int8 ONNX exports end to end: a custom_cnn trained on the embedded sample, exported by
`export_bundle` (fp32 + int8 calibrated on val, gated on test, timed), then served or refused by
the rule `predict`, the demo and the leaderboard share. Real ONNX Runtime sessions throughout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from food_assets.cli import app
from food_assets.ml.errors import CheckpointError, ConfigError
from food_assets.ml.export import load_onnx
from food_assets.ml.export.bundle_export import export_bundle
from food_assets.ml.export.quantize import (
    ImageCalibrationReader,
    QuantizeConfig,
    evaluate_int8_gate,
    gate_record,
    int8_path,
    quantize_onnx,
    save_int8,
    stamp_int8,
)
from food_assets.ml.inference import load_predictor
from food_assets.ml.inference.predictor import OnnxPredictor
from food_assets.ml.inference.serving import auto_label
from food_assets.ml.models.bundle import load_bundle

pytestmark = [
    pytest.mark.slow,  # a training run and an int8 export: ~1 min on 2 cores
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """custom_cnn trained 15 epochs on the embedded sample (benchmarks/trained_sample.py: 384
    test images, so that one image is 0.26 points and the gate's 0.5-point limit is not below
    one image), exported with int8 at temperature 1.3 (not the default, to see it carried).
    (Trained less, at ~60 % accuracy, its near ties flip under int8 and the gate rightly
    fails; trained 25 epochs, as in test_openvino.py, int8 lost 2 of the 384 test images,
    0.52 points, and failed it too.)"""
    from benchmarks.trained_sample import train_on_sample

    root = tmp_path_factory.mktemp("int8")
    splits, bundle = train_on_sample(root, epochs=15)
    out = root / "onnx_custom_cnn"
    result = export_bundle(
        bundle,
        splits,
        out,
        temperature=1.3,
        latency_repeats={1: 5, 32: 1},
        int8=QuantizeConfig(),
        openvino=False,  # the ONNX Runtime pair alone; OpenVINO's variants: test_openvino.py
    )
    return {"root": root, "splits": splits, "bundle": bundle, "result": result}


def _copy_export(sample: dict, dest: Path, record_change=None) -> Path:
    """A copy of the export folder whose int8 file carries a changed record (the graph, and so
    its hash, untouched)."""
    shutil.copytree(sample["result"].path.parent, dest)
    if record_change is not None:
        proto_path = int8_path(dest / "model.onnx")
        import onnx

        proto = onnx.load(str(proto_path))
        _, meta = load_onnx(proto_path)
        save_int8(stamp_int8(proto, record_change(json.loads(json.dumps(meta.int8)))), proto_path)
    return dest


def test_int8_gate_passes_on_a_trained_sample_model(sample) -> None:
    """Breakage caught: calibration on anything but the model's own preprocessed images, the
    classifier quantized (logit error x15), the record not stamped into the file, or an int8
    file written before its gate."""
    result = sample["result"]
    gate = result.int8_gate
    assert gate is not None and gate.passed, gate
    assert gate.metadata["n_images"] >= 100 and gate.metadata["top1_agreement"] >= 0.99
    assert gate.metadata["drop_points"] <= 0.5
    _, meta = load_onnx(result.int8_path)  # loads like any export: same classes, temperature
    _, fp32 = load_onnx(result.path)
    assert meta.precision == "int8" and fp32.precision == "fp32"
    assert (meta.class_names, meta.temperature, meta.preprocess) == (
        fp32.class_names,
        1.3,
        fp32.preprocess,
    )
    record = meta.int8
    assert record["gate"]["passed"] is True and record["quantization"]["format"] == "qdq"
    assert record["quantization"]["calibration_images"] == len(sample["splits"].frame("val"))
    assert record["quantization"]["per_channel"] is True
    assert record["latency"]["by_batch"]["1"]["int8_ms"] > 0
    on_disk = json.loads((result.path.parent / "int8.json").read_text())
    assert on_disk["gate"] == record["gate"] and on_disk["size_mb"] > 0
    assert result.int8_path.stat().st_size < 0.5 * result.path.stat().st_size
    rows = json.loads((result.path.parent / "latency.json").read_text())
    assert {r["backend"] for r in rows} == {"eager", "onnxruntime", "onnxruntime_int8"}
    assert {r["threads"] for r in rows} == {result.latency["threads"].iloc[0]}


def test_foodnet_int8_is_convolutions_and_residual_adds_only(sample, tmp_path) -> None:
    """What makes FoodNet's int8 export fast: after ONNX Runtime's graph optimisation every
    convolution is a `QLinearConv` with its ReLU6 folded into its output range, and the only
    other int8 ops are the residual adds; the graph quantizes once at the input and
    dequantizes once before the fp32 classifier (ADR 0018).

    Breakage caught: an activation that does not fold (SiLU adds a `QLinearSigmoid` and a
    `QLinearMul` pass over every activation map: 0.76x of fp32 at batch 1 against 0.51x with
    ReLU6), or convolutions left in float."""
    import collections

    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(sample["result"].int8_path), opts, providers=["CPUExecutionProvider"])

    def op_counts(path) -> collections.Counter:
        return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)

    ops, fp32 = op_counts(opts.optimized_model_filepath), op_counts(sample["result"].path)
    assert ops["QLinearConv"] == fp32["Conv"] > 30 and ops["Conv"] == 0, ops
    assert ops["QLinearAdd"] == fp32["Add"] > 0, ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    int8_ops = {op for op in ops if op.startswith("QLinear")}
    assert int8_ops == {"QLinearConv", "QLinearAdd"}, ops


def test_predict_precision_int8_agrees_with_fp32_on_the_sample_test_split(sample) -> None:
    """Breakage caught: --precision ignored (both runs fp32), int8 top-1 drifting from fp32's,
    or the chosen export not said on stderr."""
    test_paths = sorted(sample["splits"].frame("test")["path"])
    folder = str(sample["result"].path.parent)
    labels = {}
    runner = CliRunner()
    for precision in ("fp32", "int8"):
        out = runner.invoke(
            app, ["predict", *test_paths, "--from", folder, "-f", "json", "--precision", precision]
        )
        assert out.exit_code == 0, out.stderr
        assert f"precision: {precision} (" in out.stderr
        assert f"model{'_int8' if precision == 'int8' else ''}.onnx" in out.stderr
        labels[precision] = [item["label"] for item in json.loads(out.stdout)]
    same = np.mean([a == b for a, b in zip(labels["fp32"], labels["int8"], strict=True)])
    assert len(labels["int8"]) == len(test_paths) >= 100 and same >= 0.99


def test_constant_calibration_fails_the_gate_and_the_file_is_never_served(sample, tmp_path) -> None:
    """Breakage caught: a gate that ignores agreement or accuracy, `load_predictor` serving a
    failed int8 file for `int8` or `auto`, or `OnnxPredictor` loading one named directly."""
    result, splits = sample["result"], sample["splits"]
    _, card = load_bundle(sample["bundle"])
    size = card.preprocess.input_size
    constant = [np.zeros((4, 3, size, size), dtype=np.float32)]
    proto, record = quantize_onnx(result.path, ImageCalibrationReader("input", batches=constant))
    gate = evaluate_int8_gate(
        result.path,
        proto.SerializeToString(),
        splits,
        card.class_names,
        card.preprocess,
        min_agreement=0.99,
        max_drop_points=0.5,
    )
    assert not gate.passed and gate.metadata["top1_agreement"] < 0.9, gate
    folder = tmp_path / "onnx_custom_cnn"
    shutil.copytree(result.path.parent, folder)
    faster = {"threads": 2, "by_batch": {"1": {"int8_over_fp32": 0.3}}}
    bad = save_int8(
        stamp_int8(proto, {**record, "gate": gate_record(gate), "latency": faster}),
        int8_path(folder / "model.onnx"),
    )
    with pytest.raises(ConfigError, match="failed its accuracy gate.*--precision fp32"):
        load_predictor(folder, precision="int8")
    assert load_predictor(folder, precision="auto").choice.precision == "fp32"
    with pytest.raises(ConfigError, match="int8 export that cannot be served"):
        OnnxPredictor(bad)
    out = CliRunner().invoke(
        app, ["predict", str(splits.frame("test")["path"][0]), "--from", str(bad)]
    )
    assert out.exit_code != 0 and "failed its accuracy gate" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def _latency(ratio):
    return lambda r: {**r, "latency": {"by_batch": {"1": {"int8_over_fp32": ratio}}}}


@pytest.mark.parametrize(
    ("change", "auto", "int8_ok", "label"),
    [
        (None, None, True, None),  # as exported: int8 iff it was measured faster
        (_latency(0.5), "int8", True, "int8 (0.50x)"),
        (_latency(1.4), "fp32", True, "fp32 (int8 1.40x)"),
        (lambda r: {**r, "latency": None}, "fp32", True, "fp32 (int8 not timed)"),
        (lambda r: {**r, "gate": {**r["gate"], "passed": False}}, "fp32", False,
         "fp32 (int8 failed its gate)"),
        (lambda r: {**r, "gate": None}, "fp32", False, "fp32 (int8 never gated)"),
        (lambda r: {**r, "source_graph_sha256": "0" * 64}, "fp32", False, "fp32 (int8 stale)"),
    ],
)  # fmt: skip
def test_precision_auto_picks_int8_only_when_it_passed_and_was_faster(
    sample, tmp_path, change, auto, int8_ok, label
) -> None:
    """Breakage caught: auto serving int8 that failed, was never gated, is stale or was not
    faster; explicit int8 refused when it is fine; `food-assets models`' `auto serves` cell
    (`auto_label`) saying something else than what auto serves."""
    folder = _copy_export(sample, tmp_path / "export", change)
    _, meta = load_onnx(int8_path(folder / "model.onnx"))
    if auto is None:
        ratio = meta.int8["latency"]["by_batch"]["1"]["int8_over_fp32"]
        auto = "int8" if ratio < 1 else "fp32"
        label = f"int8 ({ratio:.2f}x)" if ratio < 1 else f"fp32 (int8 {ratio:.2f}x)"
    assert auto_label(folder) == auto_label(folder / "model.onnx") == label
    chosen = load_predictor(folder, precision="auto")
    assert chosen.choice.precision == auto and chosen.path.name == (
        "model_int8.onnx" if auto == "int8" else "model.onnx"
    )
    assert load_predictor(folder / "model.onnx").choice.precision == auto  # the file, same rule
    assert load_predictor(folder, precision="fp32").path.name == "model.onnx"
    if int8_ok:
        assert load_predictor(folder, precision="int8").precision == "int8"
    else:
        with pytest.raises(ConfigError, match="cannot be served"):
            load_predictor(folder, precision="int8")


def test_int8_off_removes_a_stale_int8_file(sample, tmp_path) -> None:
    """Breakage caught: an int8 file of an earlier export left next to a new fp32 export (it
    would be served for a model it no longer matches)."""
    folder = _copy_export(sample, tmp_path / "export")
    result = export_bundle(
        sample["bundle"],
        sample["splits"],
        folder,
        temperature=1.0,
        measure_latency=False,
        int8=QuantizeConfig(enabled=False),
        openvino=False,
    )
    assert result.int8_path is None and result.int8_gate is None
    assert sorted(p.name for p in folder.iterdir()) == ["latency.json", "model.onnx", "parity.json"]
    with pytest.raises(ConfigError, match="there is none"):
        load_predictor(folder, precision="int8")
    assert auto_label(folder) == "fp32 (no int8)"


def test_bad_precision_is_a_clear_error(sample) -> None:
    """Breakage caught: an unknown precision accepted (and silently served as auto), or
    reported with a traceback."""
    folder = sample["result"].path.parent
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, int8"):
        load_predictor(folder, precision="fp16")
    out = CliRunner().invoke(
        app, ["predict", str(sample["splits"].frame("test")["path"][0]), "--precision", "fp16"]
    )
    assert out.exit_code == 2 and "'fp16' is not one of" in out.stderr
    with pytest.raises(ConfigError, match="PyTorch bundle"):
        load_predictor(sample["bundle"], precision="int8")
    with pytest.raises(CheckpointError):
        load_predictor(folder / "nope.onnx", precision="int8")
