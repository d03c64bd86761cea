"""One prepared check of the GPU path, for a machine with CUDA GPUs, no network and no Dagster.

Such a machine has its own PyTorch stack (torch, torchvision, timm, lightning, pandas,
onnxruntime; maybe another torch than the pin) and can install nothing, so this script imports
only `food_assets.ml` (which needs neither Dagster nor MLflow), the standard library and that
stack. It:

1. generates a Food-101-shaped tree (`make_food101_like`, 101 classes x 100 JPEGs at 512x384),
   scans and splits it (`collect_raw_images`, `make_splits`: the data assets' functions);
2. for ResNet-50 and EfficientNet-B0 (random init: no hub), with the `configs/food101.yaml`
   recipe in scratch mode: trains one short epoch through `train_model` (the model assets'
   function), times the loader alone and the model on in-memory tensors (the limit), evaluates
   through `evaluate_bundle`, and times ONNX Runtime with the CUDA provider when installed;
3. prints one line per figure, a table, and a `GPU_CHECK_JSON {...}` line to paste.

It fails loudly (a `GPU CHECK FAILED` line, exit status 1) if there is no CUDA GPU, or if any
step ran on the CPU: every training step checks its parameters and batch are on CUDA, and every
step must have allocated CUDA memory. About 3-5 minutes on one H100/H200-class GPU; over 8
minutes is reported as a failure (exit status 3) after the figures.

    python benchmarks/gpu_check.py                     # the GPU machine
    python benchmarks/gpu_check.py --compile           # the same with torch.compile
    .venv/bin/python benchmarks/gpu_check.py --dry-run # the whole plan on the CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing it

BUDGET_S = 8 * 60
MODELS = ("resnet50", "efficientnet_b0")
RECIPE = ROOT / "configs" / "food101.yaml"


class CheckFailed(RuntimeError):
    """A step did not do what the check requires (ran on the CPU, no CUDA, ...)."""


@dataclasses.dataclass
class Plan:
    dry_run: bool
    classes: int
    per_class: int
    source_size: tuple[int, int]
    image_size: int | None  # None: the recipe's
    batch_size: int
    loader_batches: int
    in_memory_steps: int
    warmup: int
    limit_train_batches: int | None
    eval_batch_size: int
    compile: bool
    models: tuple[str, ...]

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"


def make_plan(args: argparse.Namespace) -> Plan:
    if args.dry_run:
        return Plan(
            dry_run=True, classes=3, per_class=8, source_size=(64, 48), image_size=32,
            batch_size=4, loader_batches=2, in_memory_steps=1, warmup=1, limit_train_batches=2,
            eval_batch_size=8, compile=args.compile, models=tuple(args.models),
        )  # fmt: skip
    return Plan(
        dry_run=False, classes=args.classes, per_class=args.per_class, source_size=(512, 384),
        image_size=None, batch_size=args.batch_size, loader_batches=30, in_memory_steps=30,
        warmup=5, limit_train_batches=None, eval_batch_size=256, compile=args.compile,
        models=tuple(args.models),
    )  # fmt: skip


# ------------------------------------------------------------------------------ reporting


class Report:
    """Figures as they come (one printed line each), the step timings, and the JSON summary."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.t0 = time.perf_counter()
        self.summary: dict[str, Any] = {"dry_run": plan.dry_run, "models": {}}

    def line(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", flush=True)

    def figure(self, model: str | None, key: str, value: Any, unit: str = "") -> None:
        target = self.summary["models"].setdefault(model, {}) if model else self.summary
        target[key] = round(value, 2) if isinstance(value, float) else value
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        self.line(f"{model + ': ' if model else ''}{key} = {shown}{' ' + unit if unit else ''}")

    @contextlib.contextmanager
    def step(self, name: str, model: str | None = None, *, gpu: bool = True) -> Iterator[None]:
        """Time a step; for a GPU step on CUDA, reset the peak-memory counter and require that
        it moved (a step that allocated no CUDA memory ran on the CPU)."""
        import torch

        cuda = gpu and not self.plan.dry_run
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        self.line(f"{model + ': ' if model else ''}{name} ...")
        yield
        seconds = time.perf_counter() - start
        self.figure(model, f"{name}_seconds", seconds, "s")
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            if peak <= 0:
                raise CheckFailed(f"{name}: no CUDA memory was allocated: it ran on the CPU")
            self.figure(model, f"{name}_peak_gpu_mib", peak / 2**20, "MiB")


# ------------------------------------------------------------------------------ steps


#: What the plan imports besides the standard library (the GPU machine must have these).
REQUIRED = ("torch", "torchvision", "lightning", "torchmetrics", "timm", "numpy", "pandas",
            "pyarrow", "matplotlib", "scipy", "sklearn", "yaml", "safetensors", "PIL")  # fmt: skip


def environment(report: Report) -> None:
    import importlib.util

    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise CheckFailed(
            f"this Python lacks {', '.join(missing)}, which food_assets.ml needs for the plan "
            "(Parquet manifests, plots, metrics); install or carry them and rerun"
        )
    import lightning
    import timm
    import torch
    import torchvision

    for name, mod in (("torch", torch), ("torchvision", torchvision), ("lightning", lightning),
                      ("timm", timm)):  # fmt: skip
        report.figure(None, f"{name}_version", mod.__version__)
    report.figure(None, "python", platform.python_version())
    report.figure(None, "cpu_cores", os.cpu_count() or 0)
    cuda = torch.cuda.is_available()
    report.figure(None, "cuda_available", cuda)
    if cuda:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report.figure(None, "gpus", names)
        report.figure(
            None, "gpu_capability", ".".join(map(str, torch.cuda.get_device_capability()))
        )
        report.figure(None, "bf16_supported", torch.cuda.is_bf16_supported())
    elif not report.plan.dry_run:
        raise CheckFailed(
            "no CUDA GPU visible (torch.cuda.is_available() is False): check the driver and "
            "that this torch is a CUDA build; --dry-run runs the plan on the CPU"
        )


def make_data(plan: Plan, work: Path, report: Report):
    """The Food-101-shaped tree, scanned and split as the data assets do."""
    import pandas as pd

    from benchmarks.synthetic_food101 import make_food101_like
    from food_assets.ml.data.raw import collect_raw_images
    from food_assets.ml.data.splits import SplitManifest, make_splits

    with report.step("generate", gpu=False):
        root = make_food101_like(
            work / "src", classes=plan.classes, per_class=plan.per_class,
            image_size=plan.source_size, seed=0,
        )  # fmt: skip
    with report.step("scan", gpu=False):
        raw = collect_raw_images(
            "food101", root.parent, sources_dir=work, manifest_path=work / "manifest.parquet",
            quarantine_path=work / "quarantine.parquet",
        )  # fmt: skip
    manifest = pd.read_parquet(raw.manifest_path)
    frame, class_names, _ = make_splits(manifest, val_fraction=0.1, seed=0)
    frame.to_parquet(work / "splits.parquet", index=False)
    splits = SplitManifest(work / "splits.parquet", tuple(class_names), "food101")
    counts = frame["split"].value_counts().to_dict()
    report.figure(None, "images", {k: int(v) for k, v in sorted(counts.items())})
    return splits


def recipe_config(plan: Plan, model: str):
    """`configs/food101.yaml`'s TrainConfig for `model`, in scratch mode for one epoch."""
    import yaml

    from food_assets.ml.training import TrainConfig

    ops = yaml.safe_load(RECIPE.read_text())["ops"][f"model_{model}"]["config"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    base = {k: v for k, v in ops.items() if k in fields}
    base.update(
        mode="scratch", weights="none", epochs=1, frozen_epochs=0, layer_decay=None,
        mixup_off_epochs=0, warmup_epochs=0.0, early_stopping_patience=None,
        batch_size=plan.batch_size, limit_train_batches=plan.limit_train_batches,
        limit_val_batches=None,
    )  # fmt: skip
    base = {k: v for k, v in base.items() if k in fields}
    if plan.image_size is not None:
        base["image_size"] = plan.image_size
    if plan.dry_run:
        base["num_workers"] = 0
        base["precise_bn_batches"] = 1
        base["limit_val_batches"] = 1
    return TrainConfig(**base)


def compute_config(plan: Plan, *, compile: bool):
    """One device; `precision: auto` (bf16-mixed where the GPU has bf16, else 16-mixed)."""
    from food_assets.ml.training import ComputeConfig

    accelerator = "cpu" if plan.dry_run else "gpu"
    return ComputeConfig(accelerator=accelerator, devices=1, precision="auto", compile=compile)


def check_model(plan: Plan, model: str, splits, work: Path, report: Report) -> None:
    import torch

    from benchmarks.throughput import (
        DeviceGuard,
        StepTimer,
        check_on_cuda,
        in_memory_images_per_s,
        loader_images_per_s,
    )
    from food_assets.ml.evaluation.evaluate import evaluate_bundle
    from food_assets.ml.evaluation.predict import predict_logits
    from food_assets.ml.models.bundle import load_bundle
    from food_assets.ml.models.registry import get_model_spec
    from food_assets.ml.training import train_model
    from food_assets.ml.training.compute import resolve_loader
    from food_assets.ml.training.datamodule import SplitDataModule
    from food_assets.ml.training.train import train_augment

    cfg = recipe_config(plan, model)
    compute = compute_config(plan, compile=plan.compile)
    guards = () if plan.dry_run else (DeviceGuard(),)
    report.figure(model, "batch_size", cfg.batch_size)
    report.figure(model, "compile", compute.compile)
    out = work / model

    with report.step("in_memory", model):
        limit = in_memory_images_per_s(
            model, cfg, compute, out / "in_memory", num_classes=len(splits.class_names),
            steps=plan.in_memory_steps, warmup=plan.warmup, device=plan.device,
            callbacks=guards,
        )  # fmt: skip
    report.figure(model, "train_images_per_s_in_memory", limit, "img/s")

    preprocess = get_model_spec(model).preprocess().with_size(cfg.image_size)
    for decode in ("gpu", "cpu"):
        settings = resolve_loader(compute, cfg, cuda=not plan.dry_run)
        settings = dataclasses.replace(settings, gpu_decode=decode == "gpu")
        dm = SplitDataModule(
            splits, preprocess, batch_size=cfg.batch_size, augment=train_augment(cfg),
            loader=settings,
        )  # fmt: skip
        with report.step(f"loader_{decode}_decode", model):
            rate, _ = loader_images_per_s(
                dm, plan.device, batches=plan.loader_batches, warmup=plan.warmup
            )
        report.figure(model, f"loader_images_per_s_{decode}_decode", rate, "img/s")
        report.figure(model, f"loader_vs_model_{decode}_decode", rate / limit, "x")
    report.figure(model, "loader_workers", settings.num_workers)

    timer = StepTimer(warmup=plan.warmup)
    with report.step("train", model):
        result = train_model(
            model, splits, cfg, compute, out / "run", callbacks=(timer, *guards),
            progress_bar=False,
        )  # fmt: skip
    meta = result.metadata
    report.figure(model, "train_images_per_s_loader", timer.images_per_s, "img/s")
    report.figure(model, "train_vs_in_memory", timer.images_per_s / limit, "x")
    report.figure(model, "precision", meta.get("precision"))
    report.figure(model, "amp", str(meta.get("precision")) in ("16-mixed", "bf16-mixed"))
    for key in ("channels_last", "cudnn_benchmark", "accumulate_grad_batches"):
        report.figure(model, key, meta.get(key))

    with report.step("evaluate", model):
        evaluation = evaluate_bundle(
            result.bundle_dir, splits, out / "evaluation", batch_size=plan.eval_batch_size,
            num_workers=0 if plan.dry_run else min(os.cpu_count() or 1, 16),
            device=plan.device, n_bootstrap=100,
        )  # fmt: skip
    report.figure(model, "test_acc_top1", float(evaluation.summary.get("test/acc_top1", "nan")))

    net, card = load_bundle(result.bundle_dir)
    test = splits.frame("test")
    with report.step("predict", model):
        start = time.perf_counter()
        predict_logits(
            net, test, card.preprocess, batch_size=plan.eval_batch_size,
            num_workers=0 if plan.dry_run else min(os.cpu_count() or 1, 16), device=plan.device,
        )  # fmt: skip
        if not plan.dry_run:
            torch.cuda.synchronize()
            check_on_cuda(net, next(net.parameters()), what="evaluation")
        rate = len(test) / (time.perf_counter() - start)
    report.figure(model, "eval_images_per_s", rate, "img/s")
    onnx_latency(plan, model, net.cpu(), card, out, report)


def onnx_latency(plan: Plan, model: str, net, card, out: Path, report: Report) -> None:
    """ONNX Runtime with the CUDA provider (the CPU one in a dry run), batch 1 and 32."""
    import numpy as np
    import onnxruntime as ort

    from food_assets.ml.export.onnx_export import export_onnx

    providers = ort.get_available_providers()
    provider = "CPUExecutionProvider" if plan.dry_run else "CUDAExecutionProvider"
    if provider not in providers:
        report.line(
            f"{model}: ONNX Runtime latency skipped: {provider} is not installed "
            f"(onnxruntime {ort.__version__} has {', '.join(providers)}; onnxruntime-gpu has it)"
        )
        report.figure(model, "onnx_cuda_latency_ms", None)
        return
    try:
        with report.step("onnx_export", model, gpu=False):
            path = export_onnx(net, card, out / f"{model}.onnx")
    except ImportError as exc:  # the exporter needs onnx (and onnxscript) besides onnxruntime
        report.line(f"{model}: ONNX Runtime latency skipped: the export needs {exc.name} ({exc})")
        report.figure(model, "onnx_cuda_latency_ms", None)
        return
    session = ort.InferenceSession(str(path), providers=[provider])
    if session.get_providers()[0] != provider:  # e.g. the CUDA provider's libraries missing
        report.line(
            f"{model}: ONNX Runtime latency skipped: {provider} did not load (the session "
            f"fell back to {session.get_providers()[0]}; check its CUDA/cuDNN libraries)"
        )
        report.figure(model, "onnx_cuda_latency_ms", None)
        return
    size = card.preprocess.input_size
    for batch in (1, 32):
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        for _ in range(3):
            session.run(None, {"input": x})
        times = []
        for _ in range(5 if plan.dry_run else 30):
            start = time.perf_counter()
            session.run(None, {"input": x})
            times.append((time.perf_counter() - start) * 1000)
        key = "onnx_cpu" if plan.dry_run else "onnx_cuda"
        report.figure(model, f"{key}_latency_ms_batch{batch}", float(np.median(times)), "ms")


def print_table(report: Report) -> None:
    keys = ("train_images_per_s_in_memory", "train_images_per_s_loader",
            "loader_images_per_s_gpu_decode", "loader_images_per_s_cpu_decode",
            "eval_images_per_s", "train_peak_gpu_mib", "precision", "compile")  # fmt: skip
    print("\nmodel            " + " | ".join(keys))
    for model, figures in report.summary["models"].items():
        if model is None:
            continue
        print(f"{model:16} " + " | ".join(str(figures.get(k)) for k in keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the whole plan on the CPU, tiny")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256, help="per GPU (recipe: 64)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary one")
    args = parser.parse_args(argv)
    plan = make_plan(args)
    report = Report(plan)
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            environment(report)
            splits = make_data(plan, work, report)
            for model in plan.models:
                check_model(plan, model, splits, work, report)
        except Exception as exc:  # one clear line, whatever broke
            print(f"GPU CHECK FAILED: {type(exc).__name__}: {exc}", flush=True)
            print("GPU_CHECK_JSON " + json.dumps({**report.summary, "failed": str(exc)}))
            return 1
    elapsed = time.perf_counter() - report.t0
    report.figure(None, "total_seconds", elapsed, "s")
    print_table(report)
    print("GPU_CHECK_JSON " + json.dumps(report.summary, default=str), flush=True)
    if not plan.dry_run and elapsed > BUDGET_S:
        print(f"GPU CHECK FAILED: took {elapsed:.0f} s, over the {BUDGET_S} s budget", flush=True)
        return 3
    print("GPU CHECK PASSED" + (" (dry run: CPU, tiny sizes)" if plan.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
