"""The decode cache (`DecodeCache`, ml/data/images.py): same tensors as without it, one decode
per file across epochs and datasets, and a byte budget that keeps big datasets out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from food_assets.ml.data.dataset import ManifestDataset, decoded_bytes
from food_assets.ml.data.images import DecodeCache
from food_assets.ml.data.transforms import ImagePipeline, Preprocess
from food_assets_tests.images import noisy_jpeg, solid

# torchvision 0.29 deprecates its image decoders with a DeprecationWarning, which the suite turns
# into an error; `ImagePipeline` would then fall back to PIL for every JPEG. Let the production
# path (torchvision's libjpeg-turbo decode, ADR 0006) run here.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

PRE = Preprocess(input_size=32)  # resize 36: a 512x384 JPEG (>= 72 px) takes the draft path


def _frame(tmp_path: Path) -> pd.DataFrame:
    """JPEGs small enough for torchvision's full decode, a big one for PIL draft, and a PNG."""
    rows = []
    for i in range(4):
        p = noisy_jpeg(tmp_path / f"small_{i}.jpg", size=(60, 48), seed=i)
        rows.append((p, 60, 48))
    rows.append((noisy_jpeg(tmp_path / "big.jpg", size=(512, 384), seed=9), 512, 384))
    rows.append((solid(tmp_path / "flat.png", size=(50, 40), fmt="PNG"), 50, 40))
    return pd.DataFrame(
        {
            "path": [str(p) for p, _, _ in rows],
            "label_idx": range(len(rows)),
            "width": [w for _, w, _ in rows],
            "height": [h for _, _, h in rows],
        }
    )


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real file decode, by path (a spy on `ImagePipeline._decode_file`)."""
    calls: list[str] = []
    real = ImagePipeline._decode_file

    def spy(self, path):
        calls.append(str(path))
        return real(self, path)

    monkeypatch.setattr(ImagePipeline, "_decode_file", spy)
    return calls


def test_cached_eval_tensors_equal_uncached(tmp_path: Path) -> None:
    """Breakage caught: a cache hit returning another image than a fresh decode would (e.g.
    a draft-decoded image served as a full one, or a transformed image cached instead of the
    decoded one)."""
    frame = _frame(tmp_path)
    cache = DecodeCache(2**30)
    plain = ManifestDataset(frame, PRE, train=False, cache=None)
    cached = ManifestDataset(frame, PRE, train=False, cache=cache)
    for _ in range(2):  # the second pass is served from the cache
        for i in range(len(frame)):
            assert torch.equal(plain[i][0], cached[i][0]), frame["path"][i]
    assert cache.hits == len(frame) and cache.misses == len(frame)


def test_each_file_decoded_once_across_epochs_and_datasets(tmp_path: Path, counted) -> None:
    """Three training epochs, then an evaluation dataset at another size: every file is read
    once, except the drafted big JPEG, which the other size may not share.

    Breakage caught: the cache not consulted (every epoch decodes again), keys that differ per
    dataset, or a drafted decode shared with a caller that needs another draft size.
    """
    frame = _frame(tmp_path)
    cache = DecodeCache(2**30)
    train = ManifestDataset(frame, PRE, train=True, cache=cache)
    for _ in range(3):
        for i in torch.randperm(len(frame)).tolist():
            train[i]
    assert sorted(counted) == sorted(frame["path"])
    other = ManifestDataset(frame, Preprocess(input_size=48), train=False, cache=cache)
    for i in range(len(frame)):
        other[i]
    assert counted[len(frame) :] == [str(tmp_path / "big.jpg"), str(tmp_path / "flat.png")]


def test_cached_image_survives_the_random_augmentation(tmp_path: Path) -> None:
    """Breakage caught: a transform writing into the cached uint8 tensor in place, which would
    corrupt every later epoch."""
    frame = _frame(tmp_path).iloc[:1]
    cache = DecodeCache(2**30)
    ds = ManifestDataset(frame, PRE, train=True, cache=cache)
    ds[0]
    key = DecodeCache.key(frame["path"][0])
    before = cache.get(key, ds.pipeline.draft_size).clone()
    for _ in range(20):
        ds[0]
    assert torch.equal(cache.get(key, ds.pipeline.draft_size), before)


def test_rewritten_file_is_decoded_again(tmp_path: Path) -> None:
    """Breakage caught: keys by path alone, serving a stale image after the file changed."""
    path = noisy_jpeg(tmp_path / "a.jpg", size=(60, 48), seed=1)
    frame = pd.DataFrame({"path": [str(path)], "label_idx": [0]})
    ds = ManifestDataset(frame, PRE, train=False, cache=DecodeCache(2**30))
    first = ds[0][0]
    noisy_jpeg(path, size=(64, 48), seed=2)  # another size and content
    assert not torch.equal(first, ds[0][0])
    assert torch.equal(ds[0][0], ManifestDataset(frame, PRE, train=False, cache=None)[0][0])


def test_budget_bounds_the_cache(tmp_path: Path) -> None:
    """Breakage caught: a cache that grows past its budget, or a dataset bigger than the budget
    (Food-101 at scale) using it anyway."""
    frame = _frame(tmp_path)
    need = decoded_bytes(frame)
    assert need == sum(w * h * 3 for w, h in zip(frame["width"], frame["height"], strict=True))
    too_small = DecodeCache(need - 1)
    assert ManifestDataset(frame, PRE, train=False, cache=too_small).pipeline.cache is None
    fitting = DecodeCache(need)
    assert ManifestDataset(frame, PRE, train=False, cache=fitting).pipeline.cache is fitting
    tiny = DecodeCache(60 * 48 * 3 * 2)  # room for two small images
    pipe = ImagePipeline(PRE, cache=tiny)
    for p in frame["path"]:
        pipe(p)
    assert tiny.nbytes <= tiny.budget_bytes and len(tiny) == 2


def test_full_decode_not_served_where_a_draft_would_apply(tmp_path: Path) -> None:
    """A 512x384 JPEG decoded in full for a 224 px model must not be served to a 32 px one,
    for which libjpeg decodes at 1/4 scale.

    Breakage caught: `get` serving a full decode to every caller, whatever its draft size.
    """
    path = str(noisy_jpeg(tmp_path / "photo.jpg", size=(512, 384), seed=3))
    cache = DecodeCache(2**30)
    ImagePipeline(Preprocess(input_size=224), cache=cache)(path)  # 384 < 2 x 256: full decode
    small = ImagePipeline(PRE, cache=cache)
    assert torch.equal(small(path), ImagePipeline(PRE)(path))
    assert cache.hits == 0
