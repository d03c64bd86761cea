"""ONNX Runtime's int8 options against each other, per model: which quantization pays.

For each model (random weights, 224 px), the fp32 export and one int8 export per variant of
`QuantizeConfig` (QDQ, the project's default; QDQ with depthwise convolutions kept in fp32;
QOperator, with and without them; per-tensor weight scales; int8 instead of uint8 activations),
all calibrated on the same random batches. Then batch-1 calls, all sessions in turn, round after
round (load from other work hits every variant alike); the median per session and its ratio to
the fp32 export. 2 intra-op threads, passive waiting, as `create_session` builds them.

`--activation silu` swaps FoodNet's ReLU6 for SiLU (what it used before ADR 0018), to repeat
the measurement that decided the change:

    .venv/bin/python benchmarks/int8_variants.py                        # custom_cnn, ~1 min
    .venv/bin/python benchmarks/int8_variants.py --activation silu
    .venv/bin/python benchmarks/int8_variants.py --models efficientnet_b0 --rounds 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "qdq (default)": {},
    "qdq, depthwise fp32": {"exclude_depthwise": True},
    "qoperator": {"quant_format": "qoperator"},
    "qoperator, depthwise fp32": {"quant_format": "qoperator", "exclude_depthwise": True},
    "qdq, per-tensor": {"per_channel": False},
    "qdq, int8 activations": {"activations": "int8"},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="custom_cnn", help="comma-separated registry names")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=40, help="timed calls per session")
    parser.add_argument("--activation", choices=("relu6", "silu"), default="relu6",
                        help="FoodNet's activation (custom_cnn only)")  # fmt: skip
    args = parser.parse_args()

    import numpy as np
    import torch

    import food_assets.ml.models.custom_cnn as custom_cnn
    from food_assets.ml.artifacts import scratch_dir
    from food_assets.ml.export import export_onnx
    from food_assets.ml.export.onnx_export import create_session
    from food_assets.ml.export.quantize import ImageCalibrationReader, QuantizeConfig, quantize_onnx
    from food_assets.ml.models.bundle import ModelCard
    from food_assets.ml.models.registry import create_model, get_model_spec

    if args.activation == "silu":
        custom_cnn.nn.ReLU6 = lambda inplace=True: torch.nn.SiLU(inplace)  # type: ignore[assignment]
    torch.set_num_threads(2)
    print(f"224 px batch 1, 2 threads, {args.rounds} rounds; FoodNet activation {args.activation}")
    work = scratch_dir("int8-variants-")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, weights="none").eval()
        pre = get_model_spec(name).preprocess().with_size(args.size)
        card = ModelCard(name=name, class_names=[f"c{i}" for i in range(10)], preprocess=pre)
        path = export_onnx(model, card, work / f"{name}.onnx")
        rng = np.random.default_rng(0)
        shape = (1, 3, args.size, args.size)
        calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(16)]
        sessions = {"fp32": create_session(path, threads=2)}
        for label, kw in VARIANTS.items():
            reader = ImageCalibrationReader("input", batches=calib)
            proto, _ = quantize_onnx(path, reader, QuantizeConfig(**kw))
            sessions[label] = create_session(proto.SerializeToString(), threads=2)
        x = rng.standard_normal(shape).astype(np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for session in sessions.values():
            for _ in range(5):
                session.run(None, {"input": x})
        for _ in range(args.rounds):
            for label, session in sessions.items():
                t0 = time.perf_counter()
                session.run(None, {"input": x})
                times[label].append(time.perf_counter() - t0)
        base = statistics.median(times["fp32"])
        print(f"\n{name}")
        for label, values in times.items():
            median = statistics.median(values)
            print(f"  {label:28s} {median * 1000:7.2f} ms  {median / base:5.2f}x fp32")


if __name__ == "__main__":
    main()
