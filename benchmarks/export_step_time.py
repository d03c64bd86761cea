"""What the OpenVINO variants add to an `onnx_<name>` step: `export_bundle` on a sample-trained
model with `openvino=False` (before ADR 0021) and `openvino=True`, alternating, in one process.

The sample is the embedded one (4 classes x 160 images, 64 px; the int8 and OpenVINO gates run
on its 384 test images), custom_cnn trained 3 epochs at 48 px: the step's work does not depend
on how well the model is trained. Prints each run's seconds and the median ratio.

    .venv/bin/python benchmarks/export_step_time.py            # 2 rounds
    .venv/bin/python benchmarks/export_step_time.py --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.` from a script


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    from benchmarks.trained_sample import train_on_sample
    from food_assets.ml.export.bundle_export import export_bundle
    from food_assets.ml.export.quantize import QuantizeConfig

    root = Path(tempfile.mkdtemp(prefix="export-step-"))
    splits, bundle_dir = train_on_sample(root, epochs=3)
    times: dict[str, list[float]] = {"ort_only": [], "with_openvino": []}
    for i in range(args.rounds):
        for label, openvino in (("ort_only", False), ("with_openvino", True)):
            out = root / f"{label}{i}"
            t0 = time.perf_counter()
            export_bundle(
                bundle_dir,
                splits,
                out,
                temperature=1.0,
                int8=QuantizeConfig(),
                openvino=openvino,
            )
            times[label].append(time.perf_counter() - t0)
            print(f"round {i}: {label} {times[label][-1]:.1f} s", flush=True)
    before, after = (statistics.median(times[k]) for k in ("ort_only", "with_openvino"))
    print(f"export_bundle median: {before:.1f} s without OpenVINO, {after:.1f} s with it "
          f"(x{after / before:.2f}, +{after - before:.1f} s)")  # fmt: skip
    return times


if __name__ == "__main__":
    main()
