"""`benchmarks/gpu_check.py --dry-run`: the GPU machine's whole plan, on the CPU, at a tiny size,
in an environment where Dagster and MLflow cannot be imported (as on the GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Not on the GPU machine: Dagster and MLflow (the point), and open_clip and grad-cam, which the
# plan (ResNet-50, EfficientNet-B0, no Grad-CAM) must not need either.
BLOCKED = ("dagster", "mlflow", "dagster_mlflow", "open_clip", "pytorch_grad_cam")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_dry_run_needs_neither_dagster_nor_mlflow(tmp_path: Path) -> None:
    """Breakage caught: the script (or anything under food_assets.ml it imports) importing
    Dagster or MLflow; a step of the plan failing (generation, scan, splits, training through
    train_model, the loader and in-memory probes, evaluate_bundle, ONNX export and timing); a
    missing figure in the JSON summary."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for name in BLOCKED:  # first on sys.path: `import dagster` finds this and fails
        (shadow / f"{name}.py").write_text(
            f"raise ImportError('{name} is not installed on the GPU machine')\n"
        )
    env = {**os.environ, "PYTHONPATH": str(shadow), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    probe = subprocess.run(
        [sys.executable, "-c", "import dagster"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "not installed on the GPU machine" in probe.stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
         "--work-dir", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=880,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "GPU CHECK PASSED (dry run" in proc.stdout
    summary = json.loads(
        next(line for line in proc.stdout.splitlines() if line.startswith("GPU_CHECK_JSON "))[
            len("GPU_CHECK_JSON ") :
        ]
    )
    assert summary["dry_run"] is True and summary["cuda_available"] is False
    assert set(summary["models"]) == {"resnet50", "efficientnet_b0"}
    for figures in summary["models"].values():
        for key in ("train_images_per_s_in_memory", "train_images_per_s_loader",
                    "loader_images_per_s_gpu_decode", "loader_images_per_s_cpu_decode",
                    "eval_images_per_s", "onnx_cpu_latency_ms_batch1"):  # fmt: skip
            assert figures[key] > 0, (key, figures)
        assert figures["precision"] and figures["compile"] is False
