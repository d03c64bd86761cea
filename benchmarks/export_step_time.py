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
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    from food_assets.ml.data.raw import collect_raw_images
    from food_assets.ml.data.sample import SampleSpec
    from food_assets.ml.data.splits import SplitManifest, make_splits
    from food_assets.ml.export.bundle_export import export_bundle
    from food_assets.ml.export.quantize import QuantizeConfig
    from food_assets.ml.training import ComputeConfig, TrainConfig, train_model

    root = Path(tempfile.mkdtemp(prefix="export-step-"))
    raw = collect_raw_images(
        "sample",
        None,
        sources_dir=root / "sources",
        manifest_path=root / "manifest.parquet",
        quarantine_path=root / "quarantine.parquet",
        sample=SampleSpec(num_classes=4, images_per_class=160, image_size=64),
    )
    frame, names, _ = make_splits(raw.scan.manifest, val_fraction=0.15, test_fraction=0.6)
    frame.to_parquet(root / "splits.parquet", index=False)
    splits = SplitManifest(root / "splits.parquet", names, "sample")
    cfg = TrainConfig(mode="scratch", epochs=3, batch_size=16, image_size=48, num_workers=0)
    cpu = ComputeConfig(accelerator="cpu", devices=1, precision="32-true")
    fit = train_model("custom_cnn", splits, cfg, cpu, root / "run", progress_bar=False)
    times: dict[str, list[float]] = {"ort_only": [], "with_openvino": []}
    for i in range(args.rounds):
        for label, openvino in (("ort_only", False), ("with_openvino", True)):
            out = root / f"{label}{i}"
            t0 = time.perf_counter()
            export_bundle(
                fit.bundle_dir,
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
