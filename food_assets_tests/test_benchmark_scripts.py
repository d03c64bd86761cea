"""The issue #14 benchmark scripts still run and print their comparison.

docs/benchmarks.md quotes `benchmarks/training_throughput.py --layout` / `--bf16` and
`benchmarks/int8_variants.py`; a script that no longer runs makes those figures unrepeatable.
Each runs in a fresh process at a tiny size (their `--quick` modes, or a tiny `--size`) and its
printed rows are parsed: every model gets a row, every ratio is a positive number, and the
int8 variants are real ONNX Runtime sessions that ran. Speed itself is not asserted (2 shared
cores); the ratios are the scripts' job, on a quiet machine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each script imports torch, Lightning and ONNX Runtime afresh

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_training_throughput_layout_and_bf16_quick_print_one_ratio_per_model() -> None:
    """Breakage caught: `--layout` or `--bf16` crashing, or a side not measured (no ratio)."""
    layout = _run("benchmarks/training_throughput.py", "--layout", "--quick")
    rows = re.findall(r"^custom_cnn\s+(\S+)\s+NCHW.*NHWC/NCHW: ([\d.]+)x wall", layout, re.M)
    assert len(rows) == 1 and rows[0][0] in ("32-true", "bf16-mixed"), layout
    assert float(rows[0][1]) > 0
    bf16 = _run("benchmarks/training_throughput.py", "--bf16", "--quick")
    ratios = re.findall(r"^custom_cnn\s+fp32.*bf16/fp32: ([\d.]+)x wall", bf16, re.M)
    assert len(ratios) == 1 and float(ratios[0]) > 0, bf16


def test_int8_variants_times_every_variant_against_fp32() -> None:
    """Breakage caught: a `QuantizeConfig` variant that no longer quantizes, or a variant
    missing from the printed table."""
    out = _run(
        "benchmarks/int8_variants.py", "--models", "custom_cnn", "--size", "32", "--rounds", "2"
    )
    spec = importlib.util.spec_from_file_location(
        "int8_variants", ROOT / "benchmarks/int8_variants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top level: argparse and a dict, nothing heavy
    rows = dict(re.findall(r"^  (.+?)\s+[\d.]+ ms\s+([\d.]+)x fp32$", out, re.M))
    assert set(rows) == {"fp32", *module.VARIANTS}, out
    assert rows["fp32"] == "1.00" and all(float(v) > 0 for v in rows.values())


def test_serve_load_measures_every_target_with_zero_errors() -> None:
    """`benchmarks/serve_load.py` at a tiny size: the in-process limit, food-assets serve and
    `mlflow models serve` each get a row with zero errors, and both ratios print. Breakage
    caught: a target that no longer starts (its row missing) or answers errors."""
    out = _run(
        "benchmarks/serve_load.py",
        "--model",
        "custom_cnn",
        "--requests",
        "16",
        "--clients",
        "2",
        "--image-size",
        "64",
        "48",
    )
    rows = dict(
        re.findall(
            r"^(in-process predictor|food-assets serve|mlflow models serve)"
            r"\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\d+)",
            out,
            re.M,
        )
    )
    assert rows == {
        "in-process predictor": "0",
        "food-assets serve": "0",
        "mlflow models serve": "0",
    }, out
    assert re.search(r"food-assets serve / mlflow models serve: [\d.]+x", out), out


def test_training_throughput_default_mode_trains_both_sides_in_one_layout() -> None:
    """Like with like (#22): the bare loop takes the layout Lightning resolves (`auto`, or
    `--channels-last` on both sides) and the script says which. Breakage caught: the bare loop
    left in NCHW while Lightning trains NHWC (the script exits: "layouts differ")."""
    from food_assets.ml.training.compute import channels_last_for

    tiny = ("--steps", "3", "--epochs", "2", "--image-size", "32", "--batch", "8")
    auto = _run("benchmarks/training_throughput.py", *tiny)
    want = "NHWC" if channels_last_for("auto", cuda=False) else "NCHW"
    assert f"layout={want} (channels_last auto, both sides)" in auto, auto
    assert re.search(r"ratio \(train_model / bare\): [\d.]+ of medians.*target >= 0.95", auto)
    forced = _run("benchmarks/training_throughput.py", *tiny, "--channels-last")
    assert "layout=NHWC (channels_last on, both sides)" in forced, forced


def test_inference_latency_quick_reports_tuned_eager() -> None:
    """Breakage caught: the channels_last eager column or the ORT / tuned-eager ratio missing."""
    out = _run("benchmarks/inference_latency.py", "--quick")
    header = next(line for line in out.splitlines() if "eager_tuned_ms" in line)
    for column in ("eager_ms", "eager_cl_ms", "ort_over_tuned_eager", "int8_over_fp32_ort"):
        assert column in header, header


def test_data_loading_headline_is_against_torchvision_io() -> None:
    """Breakage caught: the headline ratio against PIL again, or PIL's column dropped."""
    out = _run("benchmarks/data_loading.py", "--images", "6", "--rounds", "1", "--compare", "2")
    assert re.search(r"ratio food_assets / torchvision.io \(baseline\)\s+[\d.]+x \(target", out)
    assert re.search(r"ratio food_assets / PIL\s+[\d.]+x$", out, re.M), out
    assert "PIL open/convert + transform" in out
