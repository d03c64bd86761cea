"""OpenVINO as a serving backend, end to end: a custom_cnn trained on the embedded sample,
exported by `export_bundle` with its OpenVINO variants (fp32 and bf16 on the fp32 file, int8 on
the int8 QDQ file) gated against ONNX Runtime fp32 on the test split and timed with every
other variant in one process; then served, or refused, by the one serving rule. Real ONNX
Runtime sessions and real OpenVINO compiled models throughout."""

from __future__ import annotations

import builtins
import json
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

import food_assets
from food_assets.cli import app
from food_assets.ml.errors import ConfigError
from food_assets.ml.export.bundle_export import export_bundle
from food_assets.ml.export.metadata import K_GRAPH_SHA, K_VARIANTS, graph_sha256
from food_assets.ml.export.openvino_runtime import OpenVinoRunner, cpu_has_bf16
from food_assets.ml.export.quantize import QuantizeConfig, int8_path
from food_assets.ml.export.variants import evaluate_variant_gates
from food_assets.ml.inference import load_predictor
from food_assets.ml.inference.predictor import OnnxPredictor
from food_assets.ml.inference.serving import Candidate, decide_variant, describe_variants

pytestmark = [
    pytest.mark.slow,  # a training run and an export with five variants: ~1.5 min on 2 cores
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """custom_cnn trained 25 epochs on the embedded sample (benchmarks/trained_sample.py),
    exported with int8 and the OpenVINO variants. (Trained 15 epochs as in test_int8.py,
    OpenVINO on the int8 file agreed with fp32 on 98.96 % of the 384 test images: one near tie
    short of the 99 % gate, which rightly failed it.)"""
    from benchmarks.trained_sample import train_on_sample

    root = tmp_path_factory.mktemp("ov")
    splits, bundle = train_on_sample(root, epochs=25)
    out = root / "onnx_custom_cnn"
    result = export_bundle(
        bundle,
        splits,
        out,
        temperature=1.0,
        latency_repeats={1: 5, 32: 1},
        int8=QuantizeConfig(),
    )
    return {"root": root, "splits": splits, "bundle": bundle, "result": result}


def _record(folder: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    return json.loads(props[K_VARIANTS])


def _restamp(folder: Path, change) -> None:
    """Change the variants record inside the fp32 file (its graph, so its hash, untouched)."""
    from food_assets.ml.export.variants import stamp_variants

    stamp_variants(folder / "model.onnx", change(_record(folder)))


def test_every_openvino_gate_passes_on_the_trained_sample_and_is_recorded(sample) -> None:
    """Breakage caught: a variant not gated, its gate not recorded with the export (in the fp32
    file and variants.json), a gate recorded for another file than the one served, a latency
    missing for a variant, or the fp32 file's graph changed by the stamp."""
    result = sample["result"]
    folder = result.path.parent
    record = _record(folder)
    assert json.loads((folder / "variants.json").read_text()) == record
    expected = {"openvino/fp32", "openvino/int8"} | ({"openvino/bf16"} if cpu_has_bf16() else set())
    offered = {k for k, v in record["gates"].items() if v["offered"]}
    assert offered == expected
    for name in offered:
        gate = record["gates"][name]["gate"]
        assert gate["passed"] is True and gate["n_images"] >= 300, (name, gate)
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props[K_GRAPH_SHA] == graph_sha256(onnx.load(str(result.path)).graph)
    assert record["gates"]["openvino/fp32"]["graph_sha256"] == props[K_GRAPH_SHA]
    int8_sha = {p.key: p.value for p in onnx.load(str(result.int8_path)).metadata_props}
    assert record["gates"]["openvino/int8"]["graph_sha256"] == int8_sha[K_GRAPH_SHA]
    for name in ("onnxruntime/fp32", "onnxruntime/int8", *offered):
        assert set(record["latency_ms"][name]) == {"1", "32"}, name
    assert record["cpu"] and record["threads"] >= 1


def _forced_precision_error(src: Path, dest: Path) -> Path:
    """A copy of the export whose logits pass through `(x + 300) @ I - 300`: exact in fp32,
    while bf16 (8 mantissa bits: a step of 2 near 300) flattens them to near ties."""
    model = onnx.load(str(src))
    graph = model.graph
    out = graph.output[0].name
    n = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    for node in graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    graph.initializer.extend([
        numpy_helper.from_array(np.array(300.0, dtype=np.float32), "offset"),
        numpy_helper.from_array(np.eye(n, dtype=np.float32), "identity"),
    ])  # fmt: skip
    graph.node.extend([
        helper.make_node("Add", [f"{out}_raw", "offset"], ["shifted"]),
        helper.make_node("MatMul", ["shifted", "identity"], ["mixed"]),
        helper.make_node("Sub", ["mixed", "offset"], [out]),
    ])  # fmt: skip
    onnx.save(model, str(dest))
    return dest


def test_gates_fail_on_broken_variants(sample, tmp_path) -> None:
    """A bf16 variant with a forced precision error and an int8 file calibrated on constant
    images both fail their gates, while OpenVINO fp32 on the same altered graph passes.
    Breakage caught: a gate that ignores agreement, compares the variant with itself, or runs
    the reference at the variant's precision."""
    from food_assets.ml.export.quantize import ImageCalibrationReader, quantize_onnx
    from food_assets.ml.models.bundle import load_bundle

    result, splits = sample["result"], sample["splits"]
    _, card = load_bundle(sample["bundle"])
    broken = _forced_precision_error(result.path, tmp_path / "broken.onnx")
    size = card.preprocess.input_size
    constant = [np.zeros((4, 3, size, size), dtype=np.float32)]
    proto, _ = quantize_onnx(result.path, ImageCalibrationReader("input", batches=constant))
    bad_int8 = tmp_path / "bad_int8.onnx"
    onnx.save(proto, str(bad_int8))
    runners = {
        "openvino/fp32": OpenVinoRunner(broken, "fp32"),
        "openvino/int8": OpenVinoRunner(bad_int8, "int8"),
    }
    if cpu_has_bf16():
        runners["openvino/bf16"] = OpenVinoRunner(broken, "bf16")
    gates = evaluate_variant_gates(
        result.path,
        runners,
        splits,
        card.class_names,
        card.preprocess,
        thresholds={"openvino/fp32": (0.995, 0.25), "openvino/bf16": (0.98, 0.5),
                    "openvino/int8": (0.99, 0.5)},
    )  # fmt: skip
    assert gates["openvino/fp32"].passed, gates["openvino/fp32"]
    assert not gates["openvino/int8"].passed
    if cpu_has_bf16():
        assert not gates["openvino/bf16"].passed
        assert gates["openvino/bf16"].metadata["top1_agreement"] < 0.9


@pytest.mark.parametrize(
    ("variant", "change"),
    [
        ("openvino/int8", lambda g: {**g, "gate": {**g["gate"], "passed": False}}),
        ("openvino/int8", lambda g: {**g, "gate": None}),
        ("openvino/int8", lambda g: {**g, "graph_sha256": "0" * 64}),
        ("openvino/bf16", lambda g: {**g, "gate": {**g["gate"], "passed": False}}),
    ],
    ids=["failed", "never-gated", "stale", "bf16-failed"],
)
def test_auto_never_picks_a_failed_variant_even_when_fastest(sample, tmp_path, variant, change):
    """The variant is made the fastest by far, then its gate is failed, removed or pointed at
    another file: auto serves something else, and asking for it is a clear error.
    Breakage caught: auto choosing by latency before the gate, a stale gate accepted, or an
    explicit request serving a failed variant."""
    if variant == "openvino/bf16" and not cpu_has_bf16():
        pytest.skip("no native bf16 on this CPU")
    folder = tmp_path / "export"
    shutil.copytree(sample["result"].path.parent, folder)

    def fastest(record: dict) -> dict:
        record["latency_ms"][variant] = {"1": 1e-6, "32": 1e-6}
        return record

    _restamp(folder, fastest)
    assert load_predictor(folder).choice.backend + "/" + load_predictor(folder).precision == variant
    _restamp(folder, lambda r: {**r, "gates": {**r["gates"], variant: change(r["gates"][variant])}})
    chosen = load_predictor(folder)
    assert f"{chosen.backend}/{chosen.precision}" != variant
    backend, precision = variant.split("/")
    with pytest.raises(ConfigError, match="cannot be served"):
        load_predictor(folder, precision=precision, backend=backend)
    with pytest.raises(ConfigError, match="cannot be served by OpenVINO"):
        OnnxPredictor(
            folder / ("model_int8.onnx" if precision == "int8" else "model.onnx"),
            backend=backend,
            precision=precision,
        )
    rows = {r["variant"]: r for r in describe_variants(folder)}
    assert not rows[variant]["auto"] and rows[variant]["verdict"] != "passed"


def test_decide_variant_picks_the_fastest_servable_and_breaks_ties_to_the_reference() -> None:
    """Three candidates, a tie and an unmeasured one. Breakage caught: the slowest picked
    (reversed comparison), a tie going to OpenVINO, an unmeasured variant beating a measured
    one, or the request's backend / precision ignored."""

    def c(backend, precision, ms, ok=True):
        timed = {1: ms} if ms is not None else {}
        return Candidate(backend, precision, Path(precision), ok, "why", "", timed)

    cands = [c("onnxruntime", "fp32", 10.0), c("onnxruntime", "int8", 4.0),
             c("openvino", "fp32", 10.0), c("openvino", "bf16", 3.0, ok=False),
             c("openvino", "int8", None)]  # fmt: skip
    assert decide_variant("auto", "auto", cands)[0].precision == "int8"
    assert decide_variant("auto", "auto", cands)[0].backend == "onnxruntime"
    assert decide_variant("fp32", "auto", cands)[0].backend == "onnxruntime"  # the tie
    assert decide_variant("auto", "openvino", cands)[0].precision == "fp32"  # measured first
    with pytest.raises(ConfigError, match="openvino bf16 export cannot be served: why"):
        decide_variant("bf16", "openvino", cands)
    with pytest.raises(ConfigError, match="backend must be one of"):
        decide_variant("auto", "tensorrt", cands)


def test_served_top1_equals_the_fp32_reference_on_99_percent_of_test_images(sample) -> None:
    """Through `food_assets.load_model` (paths and PIL images alike) and `predict_array`.
    Breakage caught: a served variant that disagrees with fp32 (wrong preprocessing, the wrong
    file, bf16 on a near-tie model), or `predict` and `predict_array` that disagree."""
    folder = sample["result"].path.parent
    paths = list(sample["splits"].frame("test")["path"])
    served = food_assets.load_model(folder)
    reference = food_assets.load_model(folder, precision="fp32", backend="onnxruntime")
    assert served.choice.backend in ("onnxruntime", "openvino")
    got = [r.label for r in served.predict(paths)]
    ref = [r.label for r in reference.predict(paths)]
    agreement = np.mean([a == b for a, b in zip(got, ref, strict=True)])
    assert len(got) >= 300 and agreement >= 0.99, (served.choice, agreement)
    images = [Image.open(p).convert("RGB") for p in paths[:4]]
    by_image = served.predict(images, top_k=2)
    assert [r.label for r in by_image] == got[:4] and len(by_image[0].top_k) == 2
    x = np.stack([served._pipeline(p).numpy() for p in paths[:8]])
    probs = served.predict_array(x)
    assert probs.shape == (8, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert [served.class_names[i] for i in probs.argmax(1)] == got[:8]
    with pytest.raises(ConfigError, match=r"\(N, 3, 48, 48\)"):
        served.predict_array(x[:, :, :10])


def test_serving_works_without_openvino_and_never_touches_the_network(sample, monkeypatch):
    """openvino failing to import: auto falls back to ONNX Runtime and says why; asking for
    OpenVINO is a clear error. With it importable: compiling and running an OpenVINO variant
    opens no socket. Breakage caught: a hard import of openvino on the serving path, an
    OpenVINO variant offered without its runtime, or telemetry reaching out."""
    folder = sample["result"].path.parent
    from food_assets.ml.export import openvino_runtime

    connects = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(
        socket.socket, "connect", lambda s, a: connects.append(a) or real_connect(s, a)
    )
    monkeypatch.setattr(openvino_runtime, "_COMPILED", {})
    p = load_predictor(folder, backend="openvino")
    p.predict(list(sample["splits"].frame("test")["path"][:2]))
    assert connects == [] and "openvino_telemetry.main" not in _telemetry_senders()

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino' (simulated)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    for mod in [m for m in sys.modules if m == "openvino" or m.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(openvino_runtime, "_CORE", None)
    chosen = load_predictor(folder)
    assert chosen.choice.backend == "onnxruntime" and "openvino" in chosen.choice.reason
    with pytest.raises(ConfigError, match="openvino is not installed"):
        load_predictor(folder, backend="openvino")
    out = CliRunner().invoke(
        app, ["predict", sample["splits"].frame("test")["path"][0], "--from", str(folder),
              "--backend", "openvino"])  # fmt: skip
    assert out.exit_code != 0 and "openvino is not installed" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def _telemetry_senders() -> set[str]:
    """Telemetry modules that were not merely imported but instantiated a sender."""
    tel = sys.modules.get("openvino_telemetry.main")
    if tel is None:
        return set()
    instances = getattr(getattr(tel, "Telemetry", None), "_instances", {}) or {}
    return {"openvino_telemetry.main"} if instances else set()


def test_int8_file_named_directly_on_openvino_uses_its_own_gate(sample) -> None:
    """Breakage caught: the int8 file's OpenVINO gate read from another variant's entry."""
    result = sample["result"]
    p = OnnxPredictor(int8_path(result.path), backend="openvino", precision="int8")
    assert (p.backend, p.precision) == ("openvino", "int8")
