"""The data layer: decoding, the sample source, scanning, sources and splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from food_assets.ml.data.images import ImageDecodeError, open_image
from food_assets.ml.data.sample import SAMPLE_CLASSES, SampleSpec, generate_sample, read_boxes
from food_assets.ml.data.scan import scan_images
from food_assets.ml.data.sources import list_food101, list_imagefolder, list_sample
from food_assets.ml.data.splits import make_splits
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets.ml.errors import DataSourceError
from food_assets_tests.images import noisy_jpeg, solid, write_bad_files


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_sample_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    spec = SampleSpec(num_classes=3, images_per_class=5, image_size=64)
    a = _digest(generate_sample(tmp_path / "a", spec))
    b = _digest(generate_sample(tmp_path / "b", spec))
    c = _digest(
        generate_sample(
            tmp_path / "c", SampleSpec(num_classes=3, images_per_class=5, image_size=64, seed=1)
        )
    )
    assert a == b
    assert len(a) == 3 * 5 + 2  # images + boxes.csv + sample.json
    assert a != c


def test_sample_boxes_lie_inside_the_image_and_cover_the_object(tmp_path):
    """Each saved box is where the painted dish is in the saved JPEG, and about its size.

    The background alone is regenerated from the image's own seed (`_background` draws first
    from it), so `|image - background|` shows the dish (plus JPEG and blur noise, under 40 grey
    levels). Breakages tried, each fails this test: boxes.csv rows shifted by 20 px; boxes
    written twice as large; boxes written from another image.
    """
    from food_assets.ml.data.sample import _background

    size = 96
    spec = SampleSpec(num_classes=10, images_per_class=3, image_size=size)
    folder = generate_sample(tmp_path, spec)
    boxes = read_boxes(folder)
    assert len(boxes) == 30
    margin = 3  # blur and JPEG ringing reach a pixel or two past the painted edge
    for rel, (x0, y0, x1, y1) in boxes.items():
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        cls, index = rel.split("/")[0], int(Path(rel).stem.rsplit("_", 1)[1])
        assert cls in SAMPLE_CLASSES
        rng = np.random.default_rng([spec.seed, SAMPLE_CLASSES.index(cls), index])
        background = np.asarray(_background(rng, size), dtype=np.float32)
        img = np.asarray(open_image(folder / rel), dtype=np.float32)
        assert img.shape == (size, size, 3)
        diff = np.abs(img - background).mean(axis=2)
        inside = np.zeros(diff.shape, dtype=bool)
        inside[y0:y1, x0:x1] = True
        near = np.zeros(diff.shape, dtype=bool)
        near[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
        painted = diff > 40
        # Visible: the box differs from the background far more than the rest of the image.
        assert diff[inside].mean() > 3 * diff[~near].mean(), rel
        assert painted[inside].mean() > 0.25, rel
        # Tight: (almost) nothing painted outside it, and the dish spans most of it both ways.
        assert (painted & ~near).sum() <= 0.01 * painted.sum(), rel
        ys, xs = np.nonzero(painted & inside)
        assert (xs.max() - xs.min() + 1) >= 0.7 * (x1 - x0), rel
        assert (ys.max() - ys.min() + 1) >= 0.7 * (y1 - y0), rel


def test_open_image_normalises_modes_and_exif(tmp_path):
    expected = write_bad_files(tmp_path)
    odd = tmp_path / "odd"
    for name in ("cmyk.jpg", "palette.png", "rgba.png", "sixteen.png", "grey.jpg"):
        img = open_image(odd / name)
        assert img.mode == "RGB", name
    # 16-bit value 40000 scales to about 156 in 8 bits, not clipped to 255.
    assert open_image(odd / "sixteen.png").getpixel((0, 0)) == (156, 156, 156)
    # Transparent RGBA is composited on white.
    assert open_image(odd / "rgba.png").getpixel((0, 0)) == (255, 255, 255)
    # EXIF orientation 6 turns a 60x30 file into a 30x60 image.
    assert open_image(odd / "rotated.jpg").size == (30, 60)
    for name, reason in expected.items():
        if reason in ("ok",):
            continue
        with pytest.raises(ImageDecodeError) as err:
            open_image(odd / name, max_pixels=1_000_000)
        assert err.value.reason == reason, name


def test_jpeg_draft_decodes_smaller_but_still_covers_the_target(tmp_path):
    path = noisy_jpeg(tmp_path / "big.jpg", size=(1024, 768))
    full = open_image(path)
    drafted = open_image(path, draft_size=256)
    assert full.size == (1024, 768)
    assert drafted.size == (512, 384)  # libjpeg's 1/2 scale, both sides still >= 256


def test_scan_quarantines_every_bad_file_with_its_reason(tmp_path):
    expected = write_bad_files(tmp_path)
    listing = list_imagefolder(tmp_path)
    # Hidden files and folders are never listed, but are reported.
    names = {Path(p).name for p in listing.files["path"]}
    assert ".hidden.jpg" not in names and "x.jpg" not in names
    assert len(listing.skipped_hidden) == 2
    result = scan_images(listing.files, max_pixels=1_000_000)
    got = {
        Path(p).name: r
        for p, r in zip(result.quarantine.path, result.quarantine.reason, strict=True)
    }
    want = {n: r for n, r in expected.items() if r != "ok"}
    assert got == want
    good = set(result.manifest["path"].map(lambda p: Path(p).name))
    assert good == {n for n, r in expected.items() if r == "ok"}
    rotated = result.manifest[result.manifest.path.str.endswith("rotated.jpg")].iloc[0]
    assert (rotated.width, rotated.height) == (30, 60)
    assert set(result.manifest["mode"]) >= {"CMYK", "P", "RGBA", "L", "RGB"}
    assert result.manifest["sha256"].str.len().eq(64).all()


def test_imagefolder_errors_are_clear(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        list_imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="empty"):
        list_imagefolder(tmp_path / "empty")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataSourceError, match="is a file"):
        list_imagefolder(tmp_path / "f.txt")


def make_fake_food101(root: Path, classes=("apple_pie", "bibimbap", "pho"), n_train=8, n_test=3):
    base = root / "food-101"
    lines = {"train": [], "test": []}
    for c_i, c in enumerate(classes):
        for i in range(n_train + n_test):
            split = "train" if i < n_train else "test"
            ident = f"{c_i}{i:05d}"
            noisy_jpeg(base / "images" / c / f"{ident}.jpg", size=(64, 48), seed=c_i * 100 + i)
            lines[split].append(f"{c}/{ident}")
    (base / "meta").mkdir(parents=True)
    for split, ls in lines.items():
        (base / "meta" / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return base


def test_food101_listing_keeps_the_official_split(tmp_path):
    make_fake_food101(tmp_path)
    listing = list_food101(tmp_path)
    assert len(listing.files) == 33
    assert (listing.files.source_split == "test").sum() == 9
    with pytest.raises(DataSourceError, match="download: true"):
        list_food101(tmp_path / "missing")


def _manifest(tmp_path: Path, per_class=(12, 12, 12)) -> pd.DataFrame:
    for c, n in zip("abc", per_class, strict=True):
        for i in range(n):
            solid(tmp_path / c / f"{i}.png", colour=(ord(c), i * 7, 3), fmt="PNG")
    return scan_images(list_imagefolder(tmp_path).files).manifest


def test_splits_are_stratified_seeded_and_order_independent(tmp_path):
    manifest = _manifest(tmp_path)
    a, names, _ = make_splits(manifest, seed=3)
    b, _, _ = make_splits(manifest.sample(frac=1.0, random_state=7), seed=3)
    c, _, _ = make_splits(manifest, seed=4)
    key = ["path", "split"]
    assert a[key].sort_values("path").values.tolist() == b[key].sort_values("path").values.tolist()
    assert a[key].sort_values("path").values.tolist() != c[key].sort_values("path").values.tolist()
    assert names == ("a", "b", "c")
    counts = a.groupby(["label", "split"]).size().unstack()
    assert (counts["test"] == 2).all() and (counts["val"] == 2).all()
    assert a.label_idx.tolist() == [names.index(x) for x in a.label]


def test_duplicate_content_never_straddles_splits(tmp_path):
    manifest = _manifest(tmp_path)
    dup = manifest.iloc[[0]].copy()
    dup["path"] = dup["path"] + ".copy"
    frame, _, _ = make_splits(pd.concat([manifest, dup], ignore_index=True), seed=0)
    assert frame.groupby("sha256")["split"].nunique().max() == 1


def test_official_test_split_kept_and_train_copies_dropped(tmp_path):
    make_fake_food101(tmp_path)
    manifest = scan_images(list_food101(tmp_path).files).manifest
    leak = manifest[manifest.source_split == "test"].iloc[[0]].copy()
    leak["path"] += ".trainside"
    leak["source_split"] = "train"
    frame, _, dropped = make_splits(pd.concat([manifest, leak], ignore_index=True))
    assert dropped == 1
    test_paths = set(frame.loc[frame.split == "test", "path"])
    assert test_paths == set(manifest.loc[manifest.source_split == "test", "path"])


def test_too_small_class_is_named(tmp_path):
    manifest = _manifest(tmp_path, per_class=(12, 2, 12))
    with pytest.raises(DataSourceError, match="class 'b' has only 2"):
        make_splits(manifest)


def test_pipeline_output_matches_preprocess(tmp_path):
    path = noisy_jpeg(tmp_path / "x.jpg", size=(512, 384))
    pre = Preprocess(input_size=96, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    x = ImagePipeline(pre)(path)
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01
    t = ImagePipeline(pre, train=True)(path)
    assert t.shape == (3, 96, 96)


def test_list_sample_attaches_boxes(tmp_path):
    listing = list_sample(tmp_path, SampleSpec(num_classes=2, images_per_class=3, image_size=64))
    assert len(listing.files) == 6
    assert listing.files[["box_x0", "box_y0", "box_x1", "box_y1"]].notna().all().all()


@pytest.mark.parametrize(
    "name", ["rotated.jpg", "cmyk.jpg", "grey.jpg", "palette.png", "sixteen.png"]
)
def test_fast_decode_path_agrees_with_pil_path(tmp_path, name):
    write_bad_files(tmp_path)
    pre = Preprocess(input_size=24, crop_pct=1.0)
    pipeline = ImagePipeline(pre)
    fast = pipeline(tmp_path / "odd" / name)
    reference = pipeline.transform(open_image(tmp_path / "odd" / name))
    assert fast.shape == reference.shape == (3, 24, 24)
    assert float((fast - reference).abs().max()) < 0.1


def test_rotated_jpeg_is_upright_in_the_fast_path(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (60, 30), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 30, 30))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display: white ends up on top
    img.save(tmp_path / "r.jpg", format="JPEG", exif=exif, quality=95)
    pre = Preprocess(input_size=30, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    x = ImagePipeline(pre)(tmp_path / "r.jpg")
    assert x[:, :10].mean() > 0.9 and x[:, -10:].mean() < 0.1
