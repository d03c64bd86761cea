"""Eager PyTorch vs ONNX Runtime latency on the CPU for the registry CNNs, same threading on both.

Each model (random weights, 101 classes) is exported with `export_onnx`, checked for parity, then
both backends are timed in one process, after warm-up, in alternating blocks (eager, ORT, eager,
ORT) so that load from other processes hits both alike. The figure to read is the ratio
ORT / eager (target <= 0.8 at batch 1); absolute milliseconds drift 2x between runs on a shared
machine.

Both backends run under the same threading settings, chosen here before torch is imported
(libgomp reads `OMP_*` once, when torch loads it):

- the same number of intra-op threads (`--threads`, default: the cores this process may use),
  one inter-op thread each (torch `set_num_interop_threads(1)`, ORT `inter_op_num_threads=1`);
- the same wait policy (`--wait-policy`, default `passive`, what `food_assets` sets for every
  process, ADR 0003): `OMP_WAIT_POLICY` for torch's OpenMP threads, and ONNX Runtime's own
  equivalent, `session.intra_op.allow_spinning` (its pip wheel has its own thread pool, not
  OpenMP, so it ignores `OMP_WAIT_POLICY`; it spins by default).

    .venv/bin/python benchmarks/inference_latency.py
    .venv/bin/python benchmarks/inference_latency.py --wait-policy active   # both spin
    .venv/bin/python benchmarks/inference_latency.py --models resnet50 --size 160 --csv out.csv
    .venv/bin/python benchmarks/inference_latency.py --models resnet18   # any timm name works too
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

DEFAULT_MODELS = ("custom_cnn", "resnet50", "efficientnet_b0", "efficientnet_lite0")
NUM_CLASSES = 101


def usable_cores() -> int:
    """Cores this process may use (the affinity mask), without importing torch."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def apply_threading(threads: int, wait_policy: str) -> None:
    """Set OpenMP's thread count and wait policy; only effective before torch is imported."""
    if "torch" in sys.modules:
        sys.exit("torch is already imported: OMP_WAIT_POLICY would not apply; run as a script")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = wait_policy.upper()  # wins over food_assets' setdefault


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--size", type=int, default=224, help="input size (px)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls at batch 1")
    ap.add_argument("--repeats-large", type=int, default=3, help="timed calls at larger batches")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="default: usable cores")
    ap.add_argument(
        "--wait-policy",
        choices=("passive", "active"),
        default="passive",
        help="idle threads sleep (passive, food_assets' default) or spin (active), both backends",
    )
    ap.add_argument("--csv", default=None, help="also write the raw rows here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    threads = args.threads or usable_cores()
    apply_threading(threads, args.wait_policy)

    import numpy as np
    import onnxruntime as ort
    import pandas as pd
    import torch

    from food_assets.ml.artifacts import scratch_dir, write_text
    from food_assets.ml.data.transforms import Preprocess
    from food_assets.ml.export import check_parity, export_onnx, latency_ratio
    from food_assets.ml.models.bundle import ModelCard
    from food_assets.ml.models.registry import create_model, get_model_spec, list_models

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    spin = "1" if args.wait_policy == "active" else "0"

    def session(path) -> ort.InferenceSession:
        # `create_session`'s options (threads, 1 inter-op thread, sequential, all graph
        # optimisations) plus the spinning setting that matches OMP_WAIT_POLICY.
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def build(name: str) -> tuple[torch.nn.Module, Preprocess]:
        """A registry model by name, else a timm model of that name (random weights)."""
        if name in list_models():
            model = create_model(name, num_classes=NUM_CLASSES, weights="none")
            return model, get_model_spec(name).preprocess()
        import timm

        if name not in timm.list_models():
            sys.exit(
                f"{name!r} is neither a registry model ({', '.join(list_models())}) nor timm's"
            )
        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES), Preprocess()

    def timed(fn, args_, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn(*args_)
            out.append(time.perf_counter() - t0)
        return out

    @torch.inference_mode()
    def measure(name: str, model: torch.nn.Module, path) -> list[dict]:
        sess = session(path)
        input_name = sess.get_inputs()[0].name
        gen = torch.Generator().manual_seed(0)
        rows = []
        for batch in args.batch_sizes:
            x = torch.randn(batch, 3, args.size, args.size, generator=gen)
            feed = {input_name: x.numpy()}
            # A batch of 32 is its own warm-up after one call; more would only lengthen the run.
            for _ in range(args.warmup if batch == 1 else min(args.warmup, 1)):
                model(x)
                sess.run(None, feed)
            n = max(1, args.repeats if batch == 1 else args.repeats_large)
            times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
            for block in ((n + 1) // 2, n // 2):  # eager, ORT, eager, ORT: drift hits both
                times["eager"] += timed(model, (x,), block)
                times["onnxruntime"] += timed(sess.run, (None, feed), block)
            for backend, t in times.items():
                median = float(np.median(t))
                rows.append(
                    {
                        "model": name,
                        "backend": backend,
                        "batch": batch,
                        "median_ms": median * 1e3,
                        "p90_ms": float(np.percentile(t, 90)) * 1e3,
                        "images_per_s": batch / median,
                        "repeats": n,
                    }
                )
        return rows

    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, size {args.size}, "
        f"repeats {args.repeats} (batch 1) / {args.repeats_large} (larger), warmup {args.warmup}"
    )
    print(
        f"threading, both backends: {threads} intra-op thread(s), 1 inter-op; wait policy "
        f"{args.wait_policy} (torch: OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, get_num_threads()="
        f"{torch.get_num_threads()}, get_num_interop_threads()={torch.get_num_interop_threads()}; "
        f"ORT: intra_op_num_threads={threads}, inter_op_num_threads=1, allow_spinning={spin})"
    )
    work = scratch_dir("latency-")
    rows = []
    t_start = time.perf_counter()
    try:
        for name in args.models:
            torch.manual_seed(0)
            model, pre = build(name)
            model.eval()
            card = ModelCard(
                name=name,
                class_names=[f"class_{i}" for i in range(NUM_CLASSES)],
                preprocess=pre.with_size(args.size),
            )
            t0 = time.perf_counter()
            path = export_onnx(model, card, work / f"{name}.onnx")
            t_export = time.perf_counter() - t0
            parity = check_parity(path, model, torch.randn(2, 3, args.size, args.size))
            rows += measure(name, model, path)
            print(
                f"  {name}: export {t_export:.1f}s, {os.path.getsize(path) / 1e6:.1f} MB, "
                f"parity max|diff| {parity.max_abs_diff:.1e} ({'ok' if parity.passed else 'FAIL'})",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = pd.DataFrame(rows)
    table = latency_ratio(raw)
    pd.set_option("display.width", 120)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s")
    print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if args.csv:
        write_text(args.csv, raw.to_csv(index=False))
    return raw


if __name__ == "__main__":
    main()
