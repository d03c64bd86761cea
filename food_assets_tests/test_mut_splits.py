"""Splits, pinned down where mutation testing found the other tests loose (`make mutation`).

Manifests here are plain DataFrames (no images): `make_splits` only reads `path`, `label`,
`sha256` and `source_split`. Every expected count is worked out by hand in a comment.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from food_assets.ml.data.splits import SPLITS, SplitManifest, make_splits
from food_assets.ml.errors import DataSourceError


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(counts: dict[str, int], copies: int = 1) -> pd.DataFrame:
    """`counts[label]` distinct images per class, each present `copies` times (other paths)."""
    rows = [
        {"path": f"{label}/{i}_{c}.jpg", "label": label, "sha256": _sha(f"{label}-{i}")}
        for label, n in counts.items()
        for i in range(n)
        for c in range(copies)
    ]
    return pd.DataFrame(rows)


def _official(train: dict[str, int], test: dict[str, int]) -> pd.DataFrame:
    parts = []
    for split, counts in (("train", train), ("test", test)):
        if not counts:
            continue
        frame = _manifest(counts)
        frame["path"] = split + "/" + frame["path"]
        frame["sha256"] = [_sha(f"{split}-{p}") for p in frame["path"]]
        frame["source_split"] = split
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _counts(df: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {k: int(v) for k, v in df.groupby(["label", "split"]).size().items()}


def test_per_class_counts_follow_round_fraction_times_n_with_at_least_one() -> None:
    # 0.15 / 0.15. test: k = max(round(0.15 n), 1); val from the rest at 0.15 / 0.85.
    #   n=3:  test max(round(0.45), 1) = 1, keeps 2 (the minimum); val max(round(0.35), 1) = 1
    #   n=5:  test round(0.75) = 1; val round(4 * 0.1765) = round(0.71) = 1
    #   n=20: test round(3.0) = 3; val round(17 * 0.1765) = 3
    df, names, dropped = make_splits(_manifest({"a": 3, "b": 5, "c": 20}))
    assert _counts(df) == {
        ("a", "test"): 1, ("a", "train"): 1, ("a", "val"): 1,
        ("b", "test"): 1, ("b", "train"): 3, ("b", "val"): 1,
        ("c", "test"): 3, ("c", "train"): 14, ("c", "val"): 3,
    }  # fmt: skip
    assert names == ("a", "b", "c") and dropped == 0


def test_output_columns_dtype_and_order() -> None:
    manifest = _manifest({"b": 4, "a": 4}).sample(frac=1.0, random_state=1)
    df, names, _ = make_splits(manifest)
    assert list(df.columns) == ["path", "label", "sha256", "split", "label_idx"]
    assert df["label_idx"].dtype == np.int64
    assert df["label_idx"].tolist() == [names.index(x) for x in df["label"]]
    assert df.index.tolist() == list(range(len(df)))
    expected = sorted(zip(df["split"], df["label"], df["path"], strict=True))
    assert list(zip(df["split"], df["label"], df["path"], strict=True)) == expected


def test_default_seed_is_zero() -> None:
    manifest = _manifest({"a": 20, "b": 20})
    assert make_splits(manifest)[0].equals(make_splits(manifest, seed=0)[0])


def test_seeding_is_per_class_and_reproducible() -> None:
    """Recorded splits stay reproducible: the documented draw, restated with NumPy.

    Per class, distinct contents ordered by (sha256, path), a permutation from
    `SeedSequence([seed, *class name bytes])` picks test; val is picked the same way from the
    remaining rows with `seed + 1`.
    """
    seed = 5
    manifest = _manifest({"pho": 20, "ramen": 13})
    df, _, _ = make_splits(manifest, seed=seed)
    for label, n in (("pho", 20), ("ramen", 13)):
        rows = manifest[manifest["label"] == label].sort_values(["sha256", "path"])
        k_test = max(round(0.15 * n), 1)
        rng = np.random.default_rng(np.random.SeedSequence([seed, *label.encode()]))
        test = rows.iloc[np.sort(rng.permutation(n)[:k_test])]
        rest = rows.drop(test.index)
        k_val = max(round(0.15 / 0.85 * len(rest)), 1)
        rng = np.random.default_rng(np.random.SeedSequence([seed + 1, *label.encode()]))
        val = rest.iloc[np.sort(rng.permutation(len(rest))[:k_val])]
        got = df[df["label"] == label]
        assert set(got.loc[got["split"] == "test", "path"]) == set(test["path"])
        assert set(got.loc[got["split"] == "val", "path"]) == set(val["path"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0}, r"^val_fraction must be between 0 and 1 \(got 0.0\)$"),
        ({"test_fraction": 1.0}, r"^test_fraction must be between 0 and 1 \(got 1.0\)$"),
        ({"test_fraction": 1.5}, r"^test_fraction must be between 0 and 1 \(got 1.5\)$"),
        (
            {"val_fraction": 0.5, "test_fraction": 0.5},
            r"^val_fraction \+ test_fraction must leave images for training$",
        ),
    ],
)
def test_bad_fractions_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        make_splits(_manifest({"a": 20}), **kwargs)


def test_empty_manifest_is_refused() -> None:
    empty = _manifest({})
    with pytest.raises(
        DataSourceError, match=r"^the dataset has no usable images: nothing to split$"
    ):
        make_splits(empty.reindex(columns=["path", "label", "sha256"]))


def test_too_small_for_test_names_the_class_and_the_split() -> None:
    # n=2: test takes 1 and leaves 1, fewer than the 2 training needs (1 train + 1 val).
    message = (
        r"^class 'a' has only 2 usable image\(s\): too few to carve a test split of 15% and "
        r"keep at least 2 for training\. Add images to 'a', drop the class, or lower the test "
        r"fraction\.$"
    )
    with pytest.raises(DataSourceError, match=message):
        make_splits(_manifest({"a": 2, "b": 20}))


def test_too_small_for_val_names_the_val_split_and_its_relative_fraction() -> None:
    # val 0.8, test 0.15: n=3 -> test 1; val from 2 at 0.8 / 0.85 = 94%: round(1.88) = 2 -> 0 left.
    message = r"too few to carve a val split of 94% and keep at least 1 for training"
    with pytest.raises(DataSourceError, match=message):
        make_splits(_manifest({"a": 3}), val_fraction=0.8, test_fraction=0.15)


def test_the_first_class_by_name_is_reported_whatever_the_row_order() -> None:
    manifest = _manifest({"b": 2, "a": 2, "c": 20})
    for frame in (manifest, manifest.iloc[::-1]):
        with pytest.raises(DataSourceError, match=r"^class 'a' has only 2"):
            make_splits(frame)


def test_copies_of_one_image_count_once() -> None:
    # 2 distinct images, 10 copies each: still only 2 usable images, too few for a test split.
    with pytest.raises(DataSourceError, match=r"^class 'a' has only 2 usable image\(s\)"):
        make_splits(_manifest({"a": 2}, copies=10))


def test_official_split_keeps_test_and_carves_val_from_official_train() -> None:
    # val from official train at 0.15: a: 8 -> round(1.2) = 1; b: 20 -> 3.
    manifest = _official(train={"a": 8, "b": 20}, test={"a": 3, "b": 4})
    df, names, dropped = make_splits(manifest)
    assert _counts(df) == {
        ("a", "test"): 3, ("a", "train"): 7, ("a", "val"): 1,
        ("b", "test"): 4, ("b", "train"): 17, ("b", "val"): 3,
    }  # fmt: skip
    assert (df.loc[df["split"] == "test", "source_split"] == "test").all()
    assert (df.loc[df["split"] != "test", "source_split"] == "train").all()
    assert names == ("a", "b") and dropped == 0


def test_official_val_too_small_names_the_val_split() -> None:
    manifest = _official(train={"a": 1, "b": 10}, test={"a": 2, "b": 2})
    message = (
        r"^class 'a' has only 1 usable image\(s\): too few to carve a val split of 15% and keep "
        r"at least 1 for training\."
    )
    with pytest.raises(DataSourceError, match=message):
        make_splits(manifest)


def test_official_split_with_only_test_rows_has_no_val() -> None:
    manifest = _official(train={}, test={"a": 2, "b": 3})
    df, _, dropped = make_splits(manifest)
    assert set(df["split"]) == {"test"} and len(df) == 5 and dropped == 0


def test_split_manifest_frame_filters_and_renumbers(tmp_path) -> None:
    df, names, _ = make_splits(_manifest({"a": 5, "b": 5}))
    path = tmp_path / "splits.parquet"
    df.to_parquet(path)
    sm = SplitManifest(path=path, class_names=names, source="sample")
    assert len(sm.frame()) == len(df)
    for split in SPLITS:
        part = sm.frame(split)
        assert set(part["split"]) == {split} and list(part.columns) == list(df.columns)
        assert part.index.tolist() == list(range(len(part)))
        assert part["path"].tolist() == df.loc[df["split"] == split, "path"].tolist()
    with pytest.raises(
        ValueError, match=r"^unknown split 'dev'; use one of \('train', 'val', 'test'\)$"
    ):
        sm.frame("dev")
