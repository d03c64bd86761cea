"""CPU inference latency per model: eager fp32, eager bf16 autocast, ONNX Runtime fp32 and int8.

Each model (random weights, 101 classes) is exported with `export_onnx`, checked for parity,
quantized with `quantize_onnx` (static QDQ, per-channel int8 weights, calibrated on random
normal inputs: a latency benchmark, not an accuracy one; the `onnx_<name>` assets calibrate on
real validation images and gate the result), then every backend is timed by the ml layer's
`measure_latency` in one process, in alternating blocks, so load from other processes hits all
alike. The figures to read are the ratios (int8 / ORT fp32, target <= 0.4 for ResNet-50 and
<= 0.7 for the custom CNN at batch 1) and the fraction of the CPU's peak each backend reaches:
GMACs x 2 / time, against peaks measured in the same run: a large fp32 matmul (torch), a large
bf16 matmul (torch) and a large int8 matmul through ONNX Runtime's own int8 GEMM
(`MatMulInteger`, uint8 x int8 -> int32, the kernel its QDQ convolutions and matmuls use).

The eager baseline is run the way a competent user would: under `torch.inference_mode()`
(`measure_latency` times every eager callable inside it) and in both memory layouts, NCHW
(`eager`) and NHWC (`eager_cl`: the model in `channels_last`, the batch converted to it inside
the timed call). `eager_tuned_ms` is the faster of the two per row, and `ort_over_tuned_eager`
(ONNX Runtime fp32 / tuned eager) is the headline "ORT vs eager" ratio.

Both frameworks run under the same threading settings, chosen here before torch is imported
(libgomp reads `OMP_*` once, when torch loads it): the same number of intra-op threads
(`--threads`, default the usable cores), one inter-op thread, and the same wait policy
(`--wait-policy`: `OMP_WAIT_POLICY` for torch, `session.intra_op.allow_spinning` for ORT, set by
`create_session`).

    .venv/bin/python benchmarks/inference_latency.py            # 4 CNNs, 224 px, batch 1 and 32
    .venv/bin/python benchmarks/inference_latency.py --quick    # dry run: custom_cnn, 64 px
    .venv/bin/python benchmarks/inference_latency.py --models resnet50 --size 160 --csv out.csv
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import time

DEFAULT_MODELS = ("custom_cnn", "resnet50", "efficientnet_b0", "efficientnet_lite0")
NUM_CLASSES = 101
#: Square matrix side for the peak measurements (2048^3: ~17 GFLOP, large enough for a peak).
PEAK_N = 2048


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
    ap.add_argument("--calibration-images", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="default: usable cores")
    ap.add_argument(
        "--wait-policy",
        choices=("passive", "active"),
        default="passive",
        help="idle threads sleep (passive, food_assets' default) or spin (active), both backends",
    )
    ap.add_argument("--peak-n", type=int, default=PEAK_N, help="matrix side for the peaks")
    ap.add_argument(
        "--quick", action="store_true", help="dry run: custom_cnn, 64 px, 2 repeats, small peaks"
    )
    ap.add_argument("--csv", default=None, help="also write the raw rows here")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.size, args.repeats, args.repeats_large = ["custom_cnn"], 64, 2, 1
        args.batch_sizes, args.warmup, args.calibration_images, args.peak_n = [1, 4], 1, 4, 256
    return args


def measure_peaks(n: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of an n x n x n matmul: fp32 and bf16 in torch, int8 in ONNX
    Runtime (`MatMulInteger`, the int8 GEMM its quantized convolutions use). Best of `repeats`."""
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from food_assets.ml.export.onnx_export import create_session

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 2 * n**3 / min(times) / 1e9

    a, b = torch.randn(n, n), torch.randn(n, n)
    peaks = {"fp32": best(lambda: a @ b)}
    a16, b16 = a.bfloat16(), b.bfloat16()
    peaks["bf16"] = best(lambda: a16 @ b16)
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = create_session(proto.SerializeToString(), threads=threads)
    feed = {"a": rng.integers(0, 256, size=(n, n), dtype=np.uint8)}
    peaks["int8"] = best(lambda: session.run(None, feed))
    onnx.checker.check_model(proto)
    return peaks


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
    from food_assets.ml.export import check_parity, export_onnx, measure_latency
    from food_assets.ml.export.latency import EAGER, ORT_FP32, ORT_INT8
    from food_assets.ml.export.quantize import ImageCalibrationReader, quantize_onnx
    from food_assets.ml.models.bundle import ModelCard
    from food_assets.ml.models.profile import count_params_and_gmacs
    from food_assets.ml.models.registry import create_model, get_model_spec, list_models

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    spin = args.wait_policy == "active"

    class Bf16Autocast(torch.nn.Module):
        """The eager model under CPU bf16 autocast (what a bf16 evaluation runs)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.inner(x)

    class ChannelsLast(torch.nn.Module):
        """A channels_last copy of the model, fed NHWC (the conversion is part of the call)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = copy.deepcopy(inner).to(memory_format=torch.channels_last).eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.contiguous(memory_format=torch.channels_last))

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

    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, size {args.size}, "
        f"repeats {args.repeats} (batch 1) / {args.repeats_large} (larger), warmup {args.warmup}"
    )
    print(
        f"threading, both frameworks: {threads} intra-op thread(s), 1 inter-op; wait policy "
        f"{args.wait_policy} (torch: OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"get_num_threads()={torch.get_num_threads()}; ORT: intra_op_num_threads={threads}, "
        f"allow_spinning={int(spin)})"
    )
    peaks = measure_peaks(args.peak_n, threads)
    print(
        f"peaks ({args.peak_n}^3 matmul): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 "
        f"{peaks['bf16']:.0f} GFLOP/s (torch); int8 {peaks['int8']:.0f} GOP/s (ORT MatMulInteger)"
    )
    work = scratch_dir("latency-")
    frames, gmacs = [], {}
    t_start = time.perf_counter()
    try:
        for name in args.models:
            torch.manual_seed(0)
            model, pre = build(name)
            model.eval()
            gmacs[name] = count_params_and_gmacs(model, args.size)[1]
            card = ModelCard(
                name=name,
                class_names=[f"class_{i}" for i in range(NUM_CLASSES)],
                preprocess=pre.with_size(args.size),
            )
            t0 = time.perf_counter()
            path = export_onnx(model, card, work / f"{name}.onnx")
            parity = check_parity(path, model, torch.randn(2, 3, args.size, args.size))
            rng = np.random.default_rng(0)
            calib = [
                rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
                for _ in range(args.calibration_images)
            ]
            proto, _ = quantize_onnx(path, ImageCalibrationReader("input", batches=calib))
            t_prep = time.perf_counter() - t0
            frames.append(
                measure_latency(
                    model,
                    {ORT_FP32: path, ORT_INT8: proto.SerializeToString()},
                    args.size,
                    batch_sizes=tuple(args.batch_sizes),
                    repeats={
                        b: args.repeats if b == 1 else args.repeats_large for b in args.batch_sizes
                    },
                    warmup={
                        b: args.warmup if b == 1 else min(args.warmup, 1) for b in args.batch_sizes
                    },
                    name=name,
                    threads=threads,
                    spinning=spin,
                    extra_eager={
                        "eager_cl": ChannelsLast(model),
                        "eager_bf16": Bf16Autocast(model),
                    },
                )
            )
            print(
                f"  {name}: {gmacs[name]:.2f} GMACs, export + quantize {t_prep:.1f}s, fp32 "
                f"{os.path.getsize(path) / 1e6:.1f} MB / int8 {proto.ByteSize() / 1e6:.1f} MB, "
                f"parity max|diff| {parity.max_abs_diff:.1e} ({'ok' if parity.passed else 'FAIL'})",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = pd.concat(frames, ignore_index=True)
    table = summarise(raw, gmacs, peaks, EAGER, ORT_FP32, ORT_INT8)
    pd.set_option("display.width", 200)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(
        "\n*_peak: GMACs x 2 x batch / median time, as a fraction of the measured peak of the "
        "same precision (eager fp32 and ORT fp32 vs fp32, eager bf16 vs bf16, ORT int8 vs int8)"
    )
    print(f"total {time.perf_counter() - t_start:.0f}s")
    print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if args.csv:
        write_text(args.csv, raw.to_csv(index=False))
    return raw


def summarise(raw, gmacs: dict, peaks: dict, eager: str, ort_fp32: str, ort_int8: str):
    """One row per (model, batch): the medians, the ratios and the fraction of peak."""
    wide = raw.pivot_table(index=["model", "batch"], columns="backend", values="median_ms")
    wide = wide.reset_index()
    wide.columns.name = None
    out = wide[["model", "batch"]].copy()
    columns = {
        eager: ("eager_ms", "fp32"),
        "eager_cl": ("eager_cl_ms", "fp32"),
        "eager_bf16": ("eager_bf16_ms", "bf16"),
        ort_fp32: ("ort_fp32_ms", "fp32"),
        ort_int8: ("ort_int8_ms", "int8"),
    }
    for backend, (col, _) in columns.items():
        out[col] = wide[backend]
    out["eager_tuned_ms"] = out[["eager_ms", "eager_cl_ms"]].min(axis=1)
    out["ort_over_tuned_eager"] = out["ort_fp32_ms"] / out["eager_tuned_ms"]
    out["bf16_over_fp32_eager"] = out["eager_bf16_ms"] / out["eager_ms"]
    out["int8_over_fp32_ort"] = out["ort_int8_ms"] / out["ort_fp32_ms"]
    ops = out["model"].map(gmacs) * 2 * out["batch"]  # GFLOP (or GOP) per call
    for col, precision in columns.values():
        out[col.replace("_ms", "_peak")] = ops / (out[col] / 1e3) / peaks[precision]
    return out


if __name__ == "__main__":
    main()
