"""CPU inference latency per model: eager fp32 / bf16, ONNX Runtime fp32 / int8, OpenVINO.

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

OpenVINO (when installed) runs the same two files: fp32 and bf16 on the fp32 export, and the
int8 QDQ export, timed in the same blocks (ov_fp32, ov_bf16, ov_int8). Then the serving rule
(`serving.decide_variant`) picks what `auto` would serve from these latencies (random weights:
every variant is treated as gated, which the `onnx_<name>` assets check on real images), and a
second pass, alternating again, times that served path (`Predictor.predict_array`'s work:
the runner plus the softmax) against OpenVINO's raw runtime on the same file (a bare
`CompiledModel` infer request: the limit column) and ORT fp32. CPU model and flags are printed.

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
    import onnx
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
    print_cpu()
    peaks = measure_peaks(args.peak_n, threads)
    print(
        f"peaks ({args.peak_n}^3 matmul): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 "
        f"{peaks['bf16']:.0f} GFLOP/s (torch); int8 {peaks['int8']:.0f} GOP/s (ORT MatMulInteger)"
    )
    work = scratch_dir("latency-")
    frames, served_frames, gmacs = [], [], {}
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
            int8_file = work / f"{name}_int8.onnx"
            onnx.save_model(proto, str(int8_file))
            sources = {ORT_FP32: path, ORT_INT8: proto.SerializeToString()}
            sources.update(openvino_runners(path, int8_file, threads))
            frames.append(
                measure_latency(
                    model,
                    sources,
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
            served_frames.append(
                time_served(frames[-1], name, path, int8_file, args, threads, spin)
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
    pd.set_option("display.width", 250)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if served_frames and any(f is not None for f in served_frames):
        served = pd.concat([f for f in served_frames if f is not None], ignore_index=True)
        print("\nthe path auto serves vs OpenVINO's raw runtime on the same file (second pass):")
        print(served.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        "\n*_peak: GMACs x 2 x batch / median time, as a fraction of the measured peak of the "
        "same precision (eager fp32 and ORT fp32 vs fp32, eager bf16 vs bf16, ORT int8 vs int8)"
    )
    print(f"total {time.perf_counter() - t_start:.0f}s")
    print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if args.csv:
        write_text(args.csv, raw.to_csv(index=False))
    return raw


def print_cpu() -> None:
    """The CPU model and the flags that decide the kernels (lscpu; torch's capabilities)."""
    import subprocess

    import torch

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2"))]
    print(f"CPU: {info.get('Model name', '?').strip()}; flags: {' '.join(wanted) or '?'}")
    caps = torch.backends.cpu.get_cpu_capability()
    print(f"torch CPU capability: {caps}")
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        print(f"openvino {ov.__version__}; CPU plugin capabilities: {', '.join(caps)}")
    except ImportError:
        print("openvino: not installed (no OpenVINO columns)")


def openvino_runners(fp32_path, int8_path, threads: int) -> dict:
    """OpenVINO's three variants of the same files as runners (empty without openvino)."""
    from food_assets.ml.export.openvino_runtime import OpenVinoRunner, cpu_has_bf16, openvino_status

    if not openvino_status()[0]:
        return {}
    out = {"openvino_fp32": OpenVinoRunner(fp32_path, "fp32", threads=threads, static=(1, 32))}
    if cpu_has_bf16():
        out["openvino_bf16"] = OpenVinoRunner(fp32_path, "bf16", threads=threads, static=(1, 32))
    out["openvino_int8"] = OpenVinoRunner(int8_path, "int8", threads=threads, static=(1, 32))
    return out


def time_served(rows, name, fp32_path, int8_path, args, threads: int, spin: bool):
    """What `auto` serves from these measurements (every variant treated as gated), timed as
    served (runner + softmax) against OpenVINO's raw runtime on the same file and ORT fp32, in
    one more alternating pass. None without openvino."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints
    import pandas as pd

    from food_assets.ml.export.latency import ORT_FP32, ROW_NAMES, measure_latency, median_ms
    from food_assets.ml.export.openvino_runtime import HINTS, OpenVinoRunner, openvino_status
    from food_assets.ml.inference.predictor import softmax
    from food_assets.ml.inference.serving import Candidate, decide_variant

    if not openvino_status()[0]:
        return None
    candidates = []
    for variant, row in ROW_NAMES.items():
        backend, precision = variant.split("/")
        ms = median_ms(rows, row, 1)
        if ms is not None:
            candidates.append(Candidate(backend, precision, None, True, "", "", {1: ms}))
    chosen, _ = decide_variant("auto", "auto", candidates)
    file = int8_path if chosen.precision == "int8" else fp32_path
    precision = chosen.precision if chosen.backend == "openvino" else "fp32"
    runner = OpenVinoRunner(file, precision, threads=threads, static=tuple(args.batch_sizes))
    if chosen.backend == "openvino":
        served = lambda x: softmax(runner(x))  # noqa: E731
    else:  # ONNX Runtime serves: its session, as `OnnxPredictor` builds it
        from food_assets.ml.export.onnx_export import create_session

        session = create_session(file, threads=threads, spinning=spin)
        served = lambda x: softmax(session.run(None, {"input": x})[0])  # noqa: E731
    core = ov.Core()
    config = {
        props.inference_num_threads: threads,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.num_streams: 1,
        hints.inference_precision: HINTS[precision],
    }
    raws = {}
    for batch in args.batch_sizes:
        model = core.read_model(str(file))
        model.reshape({model.input(0).get_any_name(): [batch, 3, args.size, args.size]})
        raws[batch] = core.compile_model(model, "CPU", config).create_infer_request()
    frames = []
    for batch in args.batch_sizes:
        sources = {"ov_raw": lambda x, r=raws[batch]: r.infer({0: x}), ORT_FP32: fp32_path}
        sources["served"] = served
        frames.append(
            measure_latency(
                None,
                sources,
                args.size,
                batch_sizes=(batch,),
                repeats=args.repeats if batch == 1 else args.repeats_large,
                warmup=args.warmup,
                name=name,
                threads=threads,
                spinning=spin,
            )  # fmt: skip
        )
    timed = pd.concat(frames, ignore_index=True)
    out = []
    for batch in args.batch_sizes:
        raw = median_ms(timed, "ov_raw", batch)
        ort = median_ms(timed, ORT_FP32, batch)
        served_ms = median_ms(timed, "served", batch)
        out.append({
            "model": name, "batch": batch, "auto_serves": chosen.name,
            "raw_ov_ms": raw, "served_ms": served_ms, "ort_fp32_ms": ort,
            "served_over_raw_ov": served_ms / raw if served_ms else None,
            "served_over_ort_fp32": served_ms / ort if served_ms else None,
        })  # fmt: skip
    return pd.DataFrame(out)


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
    for precision in ("fp32", "bf16", "int8"):  # OpenVINO, when it ran
        if f"openvino_{precision}" in wide:
            out[f"ov_{precision}_ms"] = wide[f"openvino_{precision}"]
            out[f"ov_{precision}_over_ort_fp32"] = out[f"ov_{precision}_ms"] / out["ort_fp32_ms"]
    out["bf16_over_fp32_eager"] = out["eager_bf16_ms"] / out["eager_ms"]
    out["int8_over_fp32_ort"] = out["ort_int8_ms"] / out["ort_fp32_ms"]
    ops = out["model"].map(gmacs) * 2 * out["batch"]  # GFLOP (or GOP) per call
    for col, precision in columns.values():
        out[col.replace("_ms", "_peak")] = ops / (out[col] / 1e3) / peaks[precision]
    return out


if __name__ == "__main__":
    main()
