"""The GPU input path (`gpu_input.py`) run on the CPU: workers hand over file bytes, the batch
is decoded with `decode_jpeg(device=...)` and transformed by the CPU path's own v2 pipeline.

On CUDA the same code decodes with nvjpeg; here `device="cpu"` uses libjpeg-turbo, so these tests
check the logic (ordering, labels, fallbacks, the transform split, Lightning's hook) and that
the batches look like the CPU path's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from food_assets.ml.data.dataset import ManifestDataset
from food_assets.ml.data.images import ImageDecodeError
from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.data.transforms import Augment, Preprocess, denormalize
from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
from food_assets.ml.training.compute import LoaderSettings
from food_assets.ml.training.datamodule import SplitDataModule
from food_assets.ml.training.gpu_input import (
    EncodedBatch,
    EncodedCollate,
    EncodedDataset,
    GpuBatchTransform,
    nvjpeg_can_decode,
)
from food_assets_tests.images import solid

PRE = Preprocess(input_size=32)
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 60, 220)]  # one solid colour per class


def _jpeg_frame(root: Path, *, per_class: int = 4, size=(64, 48)) -> pd.DataFrame:
    """Solid-colour JPEGs: any crop of an image keeps its class's colour."""
    rows = []
    for label, colour in enumerate(COLOURS):
        for i in range(per_class):
            path = solid(root / f"c{label}" / f"{i}.jpg", colour=colour, size=size)
            rows.append({"path": str(path), "label_idx": label})
    return pd.DataFrame(rows)


def _batch(frame: pd.DataFrame, *, train: bool) -> EncodedBatch:
    ds = EncodedDataset(frame, PRE)
    return EncodedCollate(train)([ds[i] for i in range(len(ds))])


def test_eval_batches_match_the_cpu_path(tmp_path: Path) -> None:
    """Decode + resize + centre crop + normalise on the device gives the CPU path's tensors.

    Breakage caught: a transform built without the eval resize/crop, normalisation skipped or
    applied twice, images reordered against their rows.
    """
    frame = pd.DataFrame(
        [
            {
                "path": str(solid(tmp_path / f"{i}.jpg", colour=c, size=(60 + 7 * i, 44))),
                "label_idx": i,
            }
            for i, c in enumerate(COLOURS)
        ]
    )
    x, y = GpuBatchTransform(PRE, train=False)(_batch(frame, train=False), "cpu")
    cpu = ManifestDataset(frame, PRE, train=False)
    ref = torch.stack([cpu[i][0] for i in range(len(cpu))])
    assert x.shape == ref.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert type(x) is torch.Tensor  # a plain tensor, not a tv_tensors.Image
    assert y.tolist() == [0, 1, 2]
    # Two JPEG decoders (libjpeg-turbo, PIL's libjpeg) round differently: a few levels of 255.
    assert (x - ref).abs().max() < 8 / 255 / min(PRE.std)


def test_train_batches_keep_labels_aligned_and_look_like_the_cpu_path(tmp_path: Path) -> None:
    """Random resized crop + flip + normalise per image: each image keeps its class colour.

    Breakage caught: labels shuffled against images, one crop shared by the whole batch
    (identical outputs), a missing normalisation (statistics off), the train transform swapped
    for the eval one.
    """
    # Images with a left/right difference, so flips and crops change the output.
    frame = _jpeg_frame(tmp_path, per_class=4)
    for path in frame["path"][::2]:
        img = Image.open(path).convert("RGB")
        arr = np.asarray(img).copy()
        arr[:, : arr.shape[1] // 3] = 255
        Image.fromarray(arr).save(path, quality=95)
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    torch.manual_seed(0)
    x, y = GpuBatchTransform(PRE, train=True)(_batch(frame, train=True), "cpu")
    assert x.shape == (len(frame), 3, 32, 32)
    assert y.tolist() == frame["label_idx"].tolist()
    # Every image's dominant channel is its class colour's, crops and flips notwithstanding.
    rgb = denormalize(x, PRE).mean(dim=(2, 3))
    for colour_mean, label in zip(rgb, y.tolist(), strict=True):
        assert colour_mean.argmax().item() == int(np.argmax(COLOURS[label]))
    # Per-image randomness: the same file twice gives two different crops (not one per batch).
    twice = pd.concat([frame.iloc[[0]]] * 6, ignore_index=True)
    x2, _ = GpuBatchTransform(PRE, train=True)(_batch(twice, train=True), "cpu")
    assert len({hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in x2}) > 1
    # Same statistics as the CPU path's train batches of the same images.
    cpu = ManifestDataset(frame, PRE, train=True)
    ref = torch.stack([cpu[i][0] for i in range(len(cpu))])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), ref.mean(dim=(0, 2, 3)), atol=0.25)
    assert x.std() == pytest.approx(float(ref.std()), rel=0.25)


def test_augment_ops_run_per_image_after_the_batched_normalisation(tmp_path: Path) -> None:
    """The recipe's random erasing (after Normalize) still draws per image.

    Breakage caught: ops after a batch-safe run applied to the stacked batch (one erased
    rectangle for all images), or dropped.
    """
    frame = pd.concat([_jpeg_frame(tmp_path, per_class=1).iloc[[0]]] * 8, ignore_index=True)
    torch.manual_seed(1)
    t = GpuBatchTransform(PRE, train=True, augment=Augment(random_erasing=0.99))
    x, _ = t(_batch(frame, train=True), "cpu")
    # A solid image: the erased pixels are the only ones that differ from the colour.
    base = x[:, :, 0, 0].median(dim=0).values.view(1, 3, 1, 1)
    erased = ((x - base).abs().sum(1) > 0.5).flatten(1)
    assert erased.any(dim=1).sum() >= 6  # erasing happened on (almost) every image
    assert len({tuple(m.nonzero().flatten()[:4].tolist()) for m in erased}) > 1  # not one box


def test_files_nvjpeg_should_not_get_are_decoded_by_the_workers(tmp_path: Path) -> None:
    """PNGs, CMYK JPEGs and EXIF-rotated JPEGs arrive decoded (3-D) and in order.

    Breakage caught: a PNG or CMYK file sent to decode_jpeg (error on the GPU), an EXIF
    rotation ignored (the image comes out sideways), the batch order lost when kinds mix.
    """
    plain = solid(tmp_path / "plain.jpg", size=(40, 20))
    png = solid(tmp_path / "x.png", size=(30, 30), fmt="PNG")
    cmyk = solid(tmp_path / "cmyk.jpg", size=(24, 24), mode="CMYK")
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 20), (10, 200, 10)).save(rotated, exif=exif.tobytes())
    assert nvjpeg_can_decode(plain.read_bytes())
    assert not any(nvjpeg_can_decode(p.read_bytes()) for p in (png, cmyk, rotated))
    files = (png, plain, cmyk, rotated, plain)
    frame = pd.DataFrame({"path": [str(p) for p in files], "label_idx": 0})
    batch = _batch(frame, train=False)
    assert [t.ndim for t in batch.images] == [3, 1, 3, 3, 1]
    decoded = GpuBatchTransform(PRE, train=False).decode(batch, "cpu")
    shapes = [tuple(t.shape) for t in decoded]
    assert shapes == [(3, 30, 30), (3, 20, 40), (3, 24, 24), (3, 40, 20), (3, 20, 40)]


def test_an_undecodable_file_names_itself(tmp_path: Path) -> None:
    """Breakage caught: a corrupt file passed on as bytes, failing later without its path."""
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    ds = EncodedDataset(pd.DataFrame({"path": [str(bad)], "label_idx": [0]}), PRE)
    with pytest.raises(ImageDecodeError, match="garbage.jpg"):
        ds[0]


def test_the_data_module_yields_encoded_batches_and_decodes_them_in_its_hook(
    tmp_path: Path,
) -> None:
    """With gpu_decode the loaders hand over bytes; `transfer_batch_to_device` decodes.

    Breakage caught: the encoded collate missing from the loader, the hook not decoding (the
    model would get bytes), the val loader getting the train transform.
    """
    frame = _jpeg_frame(tmp_path / "img", per_class=4)
    frame["split"] = ["train", "train", "val", "train"] * 3
    frame.to_parquet(tmp_path / "splits.parquet")
    splits = SplitManifest(tmp_path / "splits.parquet", ("a", "b", "c"), "imagefolder")
    dm = SplitDataModule(
        splits, PRE, batch_size=4, loader=LoaderSettings(num_workers=0, gpu_decode=True)
    )
    dm.setup("fit")
    train_batch = next(iter(dm.train_dataloader()))
    val_batch = next(iter(dm.val_dataloader()))
    assert isinstance(train_batch, EncodedBatch) and train_batch.train
    assert isinstance(val_batch, EncodedBatch) and not val_batch.train
    x, y = dm.transfer_batch_to_device(val_batch, torch.device("cpu"), 0)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 1, 2]
    # The eval transform is deterministic: the same val batch decodes the same twice.
    x_again, _ = dm.transfer_batch_to_device(val_batch, torch.device("cpu"), 0)
    assert torch.equal(x, x_again)


@pytest.mark.slow
def test_train_model_trains_through_the_encoded_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train_model` with GPU decode forced on for the CPU: Lightning calls the data module's
    hook for train, val and precise-BN batches, and the run trains and writes its bundle.

    Breakage caught: Lightning bypassing the data module's transfer hook, PreciseBatchNorm
    iterating raw encoded batches, history counting the wrong batch size.
    """
    import food_assets.ml.training.train as train_mod

    frame = _jpeg_frame(tmp_path / "img", per_class=6)
    frame["split"] = (["train"] * 4 + ["val"] * 2) * 3
    frame.to_parquet(tmp_path / "splits.parquet")
    splits = SplitManifest(tmp_path / "splits.parquet", ("a", "b", "c"), "imagefolder")
    seen: list[bool] = []
    real = train_mod.resolve_loader

    def forced(*args, **kwargs):
        settings = real(*args, **kwargs)
        seen.append(True)
        return LoaderSettings(**{**settings.__dict__, "gpu_decode": True})

    monkeypatch.setattr(train_mod, "resolve_loader", forced)
    calls: list[int] = []
    original = SplitDataModule.transfer_batch_to_device

    def counting(self, batch, device, idx):
        calls.append(isinstance(batch, EncodedBatch))
        return original(self, batch, device, idx)

    monkeypatch.setattr(SplitDataModule, "transfer_batch_to_device", counting)
    cfg = TrainConfig(
        mode="scratch", epochs=1, batch_size=4, image_size=32, precise_bn_batches=2,
        early_stopping_patience=None, warmup_epochs=0,
    )  # fmt: skip
    result = train_model(
        "custom_cnn", splits, cfg, ComputeConfig(accelerator="cpu"), tmp_path / "run",
        progress_bar=False,
    )  # fmt: skip
    assert seen and calls and all(calls)
    # 3 train batches + 2 precise-BN batches + 2 val batches, all through the hook.
    assert len(calls) == 3 + 2 + 2
    assert result.history.iloc[0]["train_images"] == 12
    assert (result.bundle_dir / "model.safetensors").is_file()


def test_bicubic_models_augment_on_tensors(tmp_path: Path) -> None:
    """TrivialAugment on decoded tensors for a bicubic model (timm's ResNet-50, EfficientNet).

    Breakage caught: the augment ops built with bicubic interpolation, which torchvision's
    tensor rotate/affine kernels refuse: about a third of the images (the geometric ops) raised
    "Interpolation mode 'bicubic' is unsupported with Tensor input" on the GPU path and on the
    CPU path's tensor-decoded JPEGs.
    """
    pre = Preprocess(input_size=32, interpolation="bicubic")
    frame = pd.concat([_jpeg_frame(tmp_path, per_class=1)] * 10, ignore_index=True)
    transform = GpuBatchTransform(pre, train=True, augment=Augment(policy="trivialaugment"))
    torch.manual_seed(0)
    x, y = transform(_batch(frame, train=True), "cpu")  # 30 images: P(no geometric op) ~ 1e-5
    assert x.shape == (30, 3, 32, 32) and torch.isfinite(x).all()
