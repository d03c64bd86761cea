"""A custom_cnn trained on the embedded sample: the model the int8 and OpenVINO tests gate and
`export_step_time.py` exports.

The sample is 4 classes x 160 images at 64 px, 60 % of them test (384 images, so one image is
0.26 points and the int8 gate's 0.5-point limit is not below one image); the model trains at
48 px in fp32 on the CPU.
"""

from __future__ import annotations

from pathlib import Path


def train_on_sample(root: Path, *, epochs: int, lr: float = 3e-3):
    """Collect the sample under `root`, split it and train custom_cnn for `epochs`.

    Returns:
        (splits, bundle_dir): the SplitManifest and the trained bundle's folder.
    """
    from food_assets.ml.data.raw import collect_raw_images
    from food_assets.ml.data.sample import SampleSpec
    from food_assets.ml.data.splits import SplitManifest, make_splits
    from food_assets.ml.training import ComputeConfig, TrainConfig, train_model

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
    cfg = TrainConfig(
        mode="scratch", epochs=epochs, batch_size=16, lr=lr, image_size=48, num_workers=0
    )
    cpu = ComputeConfig(accelerator="cpu", devices=1, precision="32-true")
    fit = train_model("custom_cnn", splits, cfg, cpu, root / "run", progress_bar=False)
    return splits, fit.bundle_dir
