"""Training throughput: the asset's Lightning path against a bare PyTorch loop, same run.

Both sides train the same registry model (two copies of one initialisation) with the same AdamW
parameter groups, warm-up/cosine schedule, label-smoothed loss, batch size and in-memory data,
for the same number of steps per epoch, in the same memory layout and precision: the bare loop
uses NHWC exactly when the Lightning side does (`channels_last: auto` resolves to NHWC on CUDA
and on AVX-512 CPUs, ADR 0018; `--channels-last on|off` forces both) and the same autocast
dtype, so the ratio measures the framework, not the layout. The Lightning side is
`ClassifierModule` in the Trainer that `train_model` builds (`build_trainer`: history callback,
best/last checkpoints, early stopping, atomic checkpoint IO). The bare side is a plain loop.

The two sides alternate step by step in one process (a callback runs one bare step after each
Lightning step and times both), so load from other work on a shared machine hits both alike.
Images/s are batch / median step time, the first (warm-up) epoch left out. Validation and
checkpoint writes are a fixed cost per epoch, not per image, and are not counted on either side.
Target: train_model / bare >= 0.95.

    .venv/bin/python benchmarks/training_throughput.py                 # CPU defaults, < 2 min
    .venv/bin/python benchmarks/training_throughput.py --model efficientnet_lite0 --batch 64 \\
        --steps 50 --image-size 224 --accelerator gpu --precision 16-mixed

`--bf16` measures something else: bf16-mixed against fp32 training on the CPU (issue #14;
`precision: auto` picks bf16-mixed on CPUs with AVX-512 BF16 or AMX). For each model, two
copies of one initialisation train on the same in-memory batches, one step each in turn, fp32
and under `torch.autocast("cpu", torch.bfloat16)` (what Lightning's `bf16-mixed` runs); images/s
from the median step, CPU seconds per step from `time.process_time` (less sensitive to other
work on a shared machine than wall time), first steps left out as warm-up. Target: bf16 / fp32
>= 1.3 for ResNet-50 and EfficientNet-B0 at 96 px. `--channels-last` runs both sides in NHWC.

    .venv/bin/python benchmarks/training_throughput.py --bf16                  # ~5 min on 2 cores
    .venv/bin/python benchmarks/training_throughput.py --bf16 --channels-last
    .venv/bin/python benchmarks/training_throughput.py --bf16 --quick          # dry run, seconds

`--layout` measures NHWC (channels_last) against NCHW training steps the same way, each model at
the precision `precision: auto` gives it on this CPU (ADR 0018):

    .venv/bin/python benchmarks/training_throughput.py --layout                # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import os

# As food_assets/__init__.py does (ADR 0003), before torch loads: busy-waiting OpenMP threads
# distort step times on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int, size: int, num_classes: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return TensorDataset(x, y)


class BareLoop:
    """Plain PyTorch training mirroring ClassifierModule in scratch mode, one step per call."""

    def __init__(
        self,
        model: nn.Module,
        loader: DataLoader,
        args: argparse.Namespace,
        device: torch.device,
        *,
        channels_last: bool,
    ) -> None:
        from food_assets.ml.training.module import WarmupCosine

        self.device, self.loader = device, loader
        self.channels_last = channels_last  # the layout the Lightning side resolved
        self.batches = iter(())
        self.model = model.to(device).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.lr,
        )
        total = args.steps * args.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, WarmupCosine(args.steps // 2, total)
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        self.amp = args.precision in ("16-mixed", "bf16-mixed")
        self.dtype = torch.float16 if args.precision == "16-mixed" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16-mixed")

    def step(self) -> int:
        """One optimisation step on the next batch (the loader restarts when exhausted)."""
        try:
            x, y = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            x, y = next(self.batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            loss = self.criterion(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return int(y.shape[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class AlternateWithBare(pl.Callback):
    """Interleaves one bare step after every Lightning step and times both.

    A Lightning step is timed from the end of the previous bare step to the end of this
    training batch, so it includes everything Lightning does per step (fetching the batch,
    hooks, logging, the optimizer closure). Pairing step by step makes the comparison robust to
    load from other work that comes and goes within seconds.
    """

    def __init__(self, bare: BareLoop, device: torch.device) -> None:
        self.bare, self.device = bare, device
        self.pairs: list[tuple[int, float, float]] = []  # (epoch, lightning s, bare s)
        self._mark = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(self.device)
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(self.device)
        light = time.perf_counter() - self._mark
        start = time.perf_counter()
        with torch.enable_grad():
            self.bare.step()
        _sync(self.device)
        self.pairs.append((trainer.current_epoch, light, time.perf_counter() - start))
        self._mark = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="custom_cnn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs (the first is warm-up)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accelerator", default="cpu", help="cpu | gpu | auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument(
        "--bf16", action="store_true", help="bf16-mixed vs fp32 on the CPU, --models at 96 px"
    )
    parser.add_argument(
        "--layout",
        action="store_true",
        help="NHWC vs NCHW on the CPU at each model's auto precision, --models at 96 px",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="with --bf16 (default resnet50,efficientnet_b0) or --layout (default: the five CNNs)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="with --bf16: NHWC; default mode: both sides NHWC (else `auto` on both sides)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="with --bf16 or --layout: custom_cnn, 32 px, 3 steps (dry run)",
    )
    args = parser.parse_args()
    if args.bf16:
        compare_bf16(args)
        return
    if args.layout:
        compare_layout(args)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from food_assets.ml.models.registry import create_model
    from food_assets.ml.training.compute import channels_last_for
    from food_assets.ml.training.config import ComputeConfig, TrainConfig
    from food_assets.ml.training.module import ClassifierModule
    from food_assets.ml.training.train import build_trainer

    pl.seed_everything(0, verbose=False)
    gpu = args.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    data = make_data(args.batch * args.steps, args.image_size, args.num_classes)
    loader = DataLoader(data, batch_size=args.batch, shuffle=False, pin_memory=gpu)
    val_data = make_data(args.batch, args.image_size, args.num_classes, seed=1)
    val = DataLoader(val_data, batch_size=args.batch)
    template = create_model(args.model, num_classes=args.num_classes, weights="none")
    # Like with like: the bare loop takes the layout the Lightning side resolves from the same
    # setting (checked after the run), and the same precision (`args.precision` on both sides).
    layout_setting = "on" if args.channels_last else "auto"
    nhwc = channels_last_for(layout_setting, cuda=gpu)
    print(
        f"model={args.model} batch={args.batch} steps/epoch={args.steps} epochs={args.epochs} "
        f"size={args.image_size} device={device} precision={args.precision} "
        f"layout={'NHWC' if nhwc else 'NCHW'} (channels_last {layout_setting}, both sides) "
        f"torch_threads={torch.get_num_threads()}"
    )

    bare = BareLoop(copy.deepcopy(template), loader, args, device, channels_last=nhwc)
    alternate = AlternateWithBare(bare, device)
    cfg = TrainConfig(
        mode="scratch",
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        warmup_epochs=0.5,
        num_workers=0,
        early_stopping_patience=args.epochs,
    )
    compute = ComputeConfig(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision=args.precision,
        channels_last=layout_setting,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = build_trainer(
            cfg,
            compute,
            Path(tmp) / "checkpoints",
            callbacks=[alternate],
            progress_bar=False,
            default_root_dir=Path(tmp),
        )
        module = ClassifierModule(
            copy.deepcopy(template),
            num_classes=args.num_classes,
            mode="scratch",
            lr=args.lr,
            weight_decay=0.05,
            warmup_epochs=0.5,
            label_smoothing=0.1,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            trainer.fit(module, train_dataloaders=loader, val_dataloaders=val)
            total = time.perf_counter() - start
    if bool(module.channels_last) != nhwc:
        raise SystemExit(f"layouts differ: Lightning channels_last={module.channels_last}")

    # The first epoch is warm-up (allocator, oneDNN/cuDNN kernel choice) for both sides.
    measured = [(lt, bt) for epoch, lt, bt in alternate.pairs if epoch > 0]
    light_ips = args.batch / statistics.median(lt for lt, _ in measured)
    bare_ips = args.batch / statistics.median(bt for _, bt in measured)
    pair_ratio = statistics.median(bt / lt for lt, bt in measured)
    print(f"measured steps per side: {len(measured)} (first epoch left out); run {total:.1f} s")
    print(f"train_model path : {light_ips:.1f} images/s (median step)")
    print(f"bare PyTorch loop: {bare_ips:.1f} images/s (median step)")
    print(
        f"ratio (train_model / bare): {light_ips / bare_ips:.3f} of medians, "
        f"{pair_ratio:.3f} median of paired steps   (target >= 0.95)"
    )


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, *, bf16: bool) -> float:
    """One AdamW step, fp32 or under CPU bf16 autocast; the CPU seconds it took."""
    start = time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.process_time() - start


def _alternate(
    template: nn.Module,
    sides: dict[str, tuple[torch.memory_format, bool]],
    batches,
    args,
    *,
    steps: int,
    warmup: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Train one copy of `template` per side (memory format, bf16), one step each in turn on
    the same batches; images/s from the median wall step and the median CPU s/step."""
    models = {}
    for label, (fmt, _) in sides.items():
        model = copy.deepcopy(template).to(memory_format=fmt).train()
        models[label] = (model, torch.optim.AdamW(model.parameters(), lr=args.lr))
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    wall: dict[str, list[float]] = {k: [] for k in sides}
    for step in range(steps):
        x, y = batches[step % len(batches)]
        for label, (model, opt) in models.items():  # alternate: load hits both alike
            fmt, bf16 = sides[label]
            xs = x.contiguous(memory_format=fmt)
            t0 = time.perf_counter()
            seconds = _train_step(model, opt, xs, y, bf16=bf16)
            if step >= warmup:
                cpu[label].append(seconds)
                wall[label].append(time.perf_counter() - t0)
    batch = len(batches[0][1])
    ips = {k: batch / statistics.median(v) for k, v in wall.items()}
    return ips, {k: statistics.median(v) for k, v in cpu.items()}


def _setup(args: argparse.Namespace, default_models: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    models = ["custom_cnn"] if args.quick else (args.models or default_models).split(",")
    size = 32 if args.quick else 96
    steps, warmup = (3, 1) if args.quick else (12, 2)
    batch = 8 if args.quick else args.batch
    data = make_data(batch * 2, size, args.num_classes)
    return models, size, steps, warmup, batch, list(DataLoader(data, batch_size=batch))


def compare_bf16(args: argparse.Namespace) -> None:
    """bf16-mixed vs fp32 training steps on the CPU, same model, data and run (see the
    module docstring)."""
    from food_assets.ml.models.registry import create_model
    from food_assets.ml.training.precision import cpu_has_bf16

    models, size, steps, warmup, batch, batches = _setup(args, "resnet50,efficientnet_b0")
    print(
        f"bf16 vs fp32 training on the CPU: batch={batch} size={size} steps={steps} "
        f"(first {warmup} left out) channels_last={args.channels_last} "
        f"cpu_bf16={cpu_has_bf16()} torch_threads={torch.get_num_threads()}"
    )
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    for name in models:
        pl.seed_everything(0, verbose=False)
        template = create_model(name, num_classes=args.num_classes, weights="none")
        sides = {"fp32": (fmt, False), "bf16": (fmt, True)}
        ips, cpu_s = _alternate(template, sides, batches, args, steps=steps, warmup=warmup)
        print(
            f"{name:16s} fp32 {ips['fp32']:7.1f} img/s ({cpu_s['fp32']:.3f} CPU s/step)   "
            f"bf16 {ips['bf16']:7.1f} img/s ({cpu_s['bf16']:.3f} CPU s/step)   "
            f"bf16/fp32: {ips['bf16'] / ips['fp32']:.2f}x wall, "
            f"{cpu_s['fp32'] / cpu_s['bf16']:.2f}x CPU   (target >= 1.3)"
        )


def compare_layout(args: argparse.Namespace) -> None:
    """NHWC (channels_last) vs NCHW training steps on the CPU, each registry CNN at the precision
    `precision: auto` trains it in on this CPU (ADR 0018: `channels_last: auto` is on with
    AVX-512)."""
    from food_assets.ml.models.registry import create_model, get_model_spec
    from food_assets.ml.training.compute import channels_last_for
    from food_assets.ml.training.precision import resolve_training_precision

    models, size, steps, warmup, batch, batches = _setup(
        args, "custom_cnn,resnet50,efficientnet_b0,efficientnet_lite0,efficientnet_lite2"
    )
    print(
        f"NHWC vs NCHW training on the CPU: batch={batch} size={size} steps={steps} "
        f"(first {warmup} left out) channels_last auto here: "
        f"{channels_last_for('auto', cuda=False)} torch_threads={torch.get_num_threads()}"
    )
    nchw, nhwc = torch.contiguous_format, torch.channels_last
    for name in models:
        pl.seed_everything(0, verbose=False)
        template = create_model(name, num_classes=args.num_classes, weights="none")
        precision = resolve_training_precision(
            "auto", device_type="cpu", cpu_bf16_pays=get_model_spec(name).cpu_bf16
        )
        bf16 = precision == "bf16-mixed"
        sides = {"nchw": (nchw, bf16), "nhwc": (nhwc, bf16)}
        ips, cpu_s = _alternate(template, sides, batches, args, steps=steps, warmup=warmup)
        print(
            f"{name:18s} {precision:10s} NCHW {ips['nchw']:6.1f} img/s "
            f"({cpu_s['nchw']:.3f} CPU s/step)   NHWC {ips['nhwc']:6.1f} img/s "
            f"({cpu_s['nhwc']:.3f} CPU s/step)   NHWC/NCHW: {ips['nhwc'] / ips['nchw']:.2f}x wall, "
            f"{cpu_s['nchw'] / cpu_s['nhwc']:.2f}x CPU"
        )


if __name__ == "__main__":
    main()
