"""Food-101 at scale: the generated Food-101-shaped tree, and Grad-CAM's flat memory.

The generator (`benchmarks/synthetic_food101.py`) is what `benchmarks/scale.py`, the GPU
check and the slow data-asset test read; these tests pin its layout (the one torchvision and
`source: food101` read), its determinism and that its classes can be told apart. The last test
runs a Grad-CAM report over 4x more images in a fresh process and checks the peak does not
move (ADR 0015). The scan's tests at this size are in `test_mut_scan_scale.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import synthetic_food101
from benchmarks.synthetic_food101 import (
    FOOD101_CLASSES,
    make_food101_like,
    render_food101_like_image,
)
from food_assets.ml.data.sources import list_food101
from food_assets.ml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.jpg"))
    }


# --- the generated tree -----------------------------------------------------------------------


def test_food101_like_tree_has_torchvisions_layout_and_food101s_proportions(tmp_path) -> None:
    """Breakage caught: the 3/4 train share changed (train/test counts), meta/*.json missing
    (torchvision fails), the sizes not Food-101's (longer side 512 in the landscape, portrait
    and square mix), or the listing of `source: food101` not finding the tree."""
    from torchvision.datasets import Food101

    base = make_food101_like(tmp_path, classes=3, per_class=40, image_size=(96, 72), workers=1)
    assert base == tmp_path / "food-101"
    meta = base / "meta"
    assert meta.joinpath("classes.txt").read_text().split() == list(FOOD101_CLASSES[:3])
    assert meta.joinpath("labels.txt").read_text().splitlines() == [
        "Apple pie",
        "Baby back ribs",
        "Baklava",
    ]
    train = meta.joinpath("train.txt").read_text().split()
    test = meta.joinpath("test.txt").read_text().split()
    assert len(train) == 3 * 30 and len(test) == 3 * 10 and not set(train) & set(test)
    assert json.loads(meta.joinpath("test.json").read_text())["baklava"] == [
        t for t in test if t.startswith("baklava/")
    ]
    ds = Food101(str(tmp_path), split="test")
    assert len(ds) == 30 and ds.classes == list(FOOD101_CLASSES[:3])
    sizes = {Image.open(base / "images" / f"{t}.jpg").size for t in train + test}
    assert sizes == {(96, 72), (72, 96), (96, 96)}

    listing = list_food101(tmp_path)
    assert listing.files["source_split"].value_counts().to_dict() == {"train": 90, "test": 30}
    assert all(Path(p).is_file() for p in listing.files["path"])


def test_food101_like_tree_is_reproducible_and_reused(tmp_path) -> None:
    """The same arguments give the same bytes whatever the worker count, and a second call
    reuses the tree; another seed gives other images.

    Breakage caught: noise drawn per worker process (workers=1 and 2 differ), the parameters
    file ignored (the tree rewritten: new mtimes), the seed not passed to the workers."""
    synthetic_food101._noise_bank.clear()  # each process then builds its own noise bank
    one = make_food101_like(tmp_path / "a", classes=2, per_class=6, image_size=(64, 48), workers=1)
    synthetic_food101._noise_bank.clear()
    two = make_food101_like(tmp_path / "b", classes=2, per_class=6, image_size=(64, 48), workers=2)
    assert _digest(one) == _digest(two)
    stamp = {p: p.stat().st_mtime_ns for p in one.rglob("*.jpg")}
    assert make_food101_like(tmp_path / "a", classes=2, per_class=6, image_size=(64, 48)) == one
    assert {p: p.stat().st_mtime_ns for p in one.rglob("*.jpg")} == stamp
    other = make_food101_like(tmp_path / "c", classes=2, per_class=6, image_size=(64, 48), seed=1)
    assert _digest(other) != _digest(one)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 0}, "classes must be 1..101"),
        ({"classes": 102}, "classes must be 1..101"),
        ({"per_class": 1}, "per_class must be >= 2"),
        ({"image_size": (512, 20)}, "each side must be >= 32"),
    ],
)
def test_food101_like_bad_arguments_are_config_errors(tmp_path, kwargs, message) -> None:
    """Breakage caught: a bad argument reaching the generator (a traceback, or a tree of 0
    classes) instead of one ConfigError naming the limit."""
    with pytest.raises(ConfigError, match=message):
        make_food101_like(tmp_path, **{"classes": 2, "per_class": 4, **kwargs})
    assert not (tmp_path / "food-101").exists()


def _features(img: Image.Image) -> np.ndarray:
    # A 4x4 grid of mean colours and the colour spread: what a small CNN picks up first.
    small = np.asarray(img.resize((4, 4), Image.Resampling.BOX), dtype=np.float64) / 255
    arr = np.asarray(img, dtype=np.float64) / 255
    return np.concatenate([small.ravel(), arr.std(axis=(0, 1))])


def test_food101_like_classes_are_learnable() -> None:
    """A nearest-centroid classifier on colour features, fitted on 12 images per class and
    scored on 8 others, beats chance (1/20) by far on 20 classes.

    Breakage caught: the per-class palette and pattern replaced by one shared style (the ten
    painters alone, shared by classes c and c + 10: accuracy falls to about half of this)."""
    classes, n_fit, n_test = 20, 12, 8
    feats = {
        c: np.stack([_features(render_food101_like_image(c, i, size=(64, 48))) for i in range(20)])
        for c in range(classes)
    }
    centroids = np.stack([feats[c][:n_fit].mean(axis=0) for c in range(classes)])
    hits = 0
    for c in range(classes):
        dist = ((feats[c][n_fit : n_fit + n_test, None, :] - centroids[None]) ** 2).sum(-1)
        hits += int((dist.argmin(axis=1) == c).sum())
    assert hits / (classes * n_test) >= 0.8


def test_make_food101_like_cli(tmp_path, capsys) -> None:
    """The benchmark's thin CLI: makes the tree, and a bad argument is one line, exit code 2.

    Breakage caught: a flag not reaching the generator (wrong class count), a ConfigError
    escaping as a traceback."""
    spec = importlib.util.spec_from_file_location(
        "make_food101_like_cli", ROOT / "benchmarks" / "make_food101_like.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    argv = ["--root", str(tmp_path), "--classes", "2", "--per-class", "4"]
    assert cli.main([*argv, "--width", "64", "--height", "48", "--workers", "1"]) == 0
    assert len((tmp_path / "food-101" / "meta" / "classes.txt").read_text().split()) == 2
    assert "2 classes x 4 images (8)" in capsys.readouterr().out
    assert cli.main(["--root", str(tmp_path / "x"), "--classes", "500"]) == 2
    assert "error: classes must be 1..101" in capsys.readouterr().err


# --- Grad-CAM's memory does not grow with the images it looks at -------------------------------

_GRADCAM_CHILD = """
import json, resource, sys, tempfile
import torch
from torch import nn
from food_assets.ml.data.sources import list_food101
from food_assets.ml.data.transforms import Preprocess
from food_assets.ml.explain import build_gradcam_report
from food_assets.ml.models.bundle import ModelCard

root, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
frame = list_food101(root).files
classes = sorted(frame["label"].unique())
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    nn.Linear(4, len(classes)),
)
card = ModelCard(name="tiny", class_names=classes, preprocess=Preprocess(input_size=224))
result = build_gradcam_report(
    model, card, "0", None, frame, tempfile.mkdtemp(), max_images=n, n_sanity=n,
    n_per_gallery=2, per_class=1, n_classes=2, batch_size=8,
)
print(json.dumps({
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "deletion_n": result.metrics["gradcam/deletion_n"],
}))
"""


def _gradcam_peak_mb(root: Path, n: int) -> dict:
    # A fixed mmap threshold makes glibc return every large freed block at once: the peak then
    # follows what the code holds, not how fragmented the heap got (with glibc's dynamic
    # threshold, identical work in more batches leaves a few MB more resident).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", _GRADCAM_CHILD, str(root), str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_gradcam_peak_memory_does_not_grow_with_the_images_explained(tmp_path) -> None:
    """Peak RSS of a Grad-CAM report over 48 and over 192 images (scored, explained and
    sanity-checked at 224 px), each in a fresh process: the second may not cost more than a
    few MB more (measured: the same peak to 1 MB).

    Breakage caught: the CAM pass before ADR 0015 (every needed image stacked at once, kept with
    its RGB copy and CAM until the report is written, and a full backward per batch): +370 MB.
    """
    make_food101_like(tmp_path, classes=4, per_class=60, image_size=(96, 72), workers=1)
    small, large = _gradcam_peak_mb(tmp_path, 48), _gradcam_peak_mb(tmp_path, 192)
    assert (small["deletion_n"], large["deletion_n"]) == (48, 192)
    assert large["peak_mb"] - small["peak_mb"] < 40, (small, large)
