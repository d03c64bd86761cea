"""Stratified, seeded train/val/test splits that do not depend on file listing order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from food_assets.ml.errors import DataSourceError

SPLITS = ("train", "val", "test")
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")


@dataclass(frozen=True)
class SplitManifest:
    """The `food_splits` asset's value: where the manifest is and which class map it uses."""

    path: Path
    class_names: tuple[str, ...]
    source: str

    def frame(self, split: str | None = None) -> pd.DataFrame:
        df = pd.read_parquet(self.path)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
            df = df[df["split"] == split].reset_index(drop=True)
        return df

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def digest(self, split: str | None = None) -> str:
        """The manifest's identity (one for every consumer: training's resume key, the CLIP
        feature cache, the MLflow datasets): `lineage.split_rows_digest` of every row (or those
        of `split`) with the class map. Hashing the rows rather than the Parquet bytes keeps it
        stable when the same splits are rewritten, and changes it when any image, label or split
        assignment changes.
        """
        from food_assets.ml.data.lineage import split_rows_digest

        return split_rows_digest(self.frame(split), self.class_names)


def _stratified_pick(
    frame: pd.DataFrame, fraction: float, seed: int, *, what: str, min_left: int = 1
) -> pd.Index:
    """Index of rows picked per class: round(fraction * n) of each class, at least one.

    Rows are ordered by content hash then path before the seeded shuffle, so the result does not
    depend on the order in which the files were listed.
    """
    picked: list[pd.Index] = []
    for label, group in frame.groupby("label", sort=True):
        n = len(group)
        k = int(round(fraction * n))
        k = max(k, 1)
        if n - k < min_left:
            raise DataSourceError(
                f"class {label!r} has only {n} usable image(s): too few to carve a {what} split "
                f"of {fraction:.0%} and keep at least {min_left} for training. Add images to "
                f"{label!r}, drop the class, or lower the {what} fraction."
            )
        ordered = group.sort_values(["sha256", "path"])
        # One generator per class, seeded from (seed, class name): adding a class elsewhere does
        # not reshuffle this one.
        class_seed = np.random.SeedSequence([seed, *label.encode("utf-8")])
        rng = np.random.default_rng(class_seed)
        choice = rng.permutation(n)[:k]
        picked.append(ordered.index[np.sort(choice)])
    return picked[0].append(picked[1:]) if picked else pd.Index([])


def make_splits(
    manifest: pd.DataFrame,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Assign each good image to train, val or test.

    Images with identical content (same SHA-256) always land in the same split, so a duplicate
    can never leak from train into test. If the manifest carries a `source_split` column with
    `test` rows (Food-101's official split), those rows are the test split as they are, val is
    carved from the official train rows, and train copies of a test image are dropped.
    Otherwise test and val are both carved per class.

    Returns:
        (frame with `split` and `label_idx` columns, sorted class names, number of train rows
        dropped as copies of a test image)
    """
    if manifest.empty:
        raise DataSourceError("the dataset has no usable images: nothing to split")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise DataSourceError(f"{name} must be between 0 and 1 (got {frac})")
    if val_fraction + test_fraction >= 1.0:
        raise DataSourceError("val_fraction + test_fraction must leave images for training")

    df = manifest.copy()
    official = "source_split" in df.columns and (df["source_split"] == "test").any()
    dropped = 0
    if official:
        test_hashes = set(df.loc[df["source_split"] == "test", "sha256"])
        leak = (df["source_split"] != "test") & df["sha256"].isin(test_hashes)
        dropped = int(leak.sum())
        df = df[~leak].copy()
    # Pick over unique contents, then give every copy the split of its content.
    groups = df.drop_duplicates("sha256")[["sha256", "label", "path"]].copy()
    groups["split"] = "train"
    if official:
        test = set(df.loc[df["source_split"] == "test", "sha256"])
        groups.loc[groups["sha256"].isin(test), "split"] = "test"
        pool = groups[groups["split"] == "train"]
        groups.loc[_stratified_pick(pool, val_fraction, seed, what="val"), "split"] = "val"
    else:
        test_idx = _stratified_pick(groups, test_fraction, seed, what="test", min_left=2)
        groups.loc[test_idx, "split"] = "test"
        pool = groups[groups["split"] == "train"]
        rel_val = val_fraction / (1.0 - test_fraction)
        groups.loc[_stratified_pick(pool, rel_val, seed + 1, what="val"), "split"] = "val"
    df["split"] = df["sha256"].map(dict(zip(groups["sha256"], groups["split"], strict=True)))

    class_names = tuple(sorted(df["label"].unique()))
    index = {c: i for i, c in enumerate(class_names)}
    df["label_idx"] = df["label"].map(index).astype("int64")
    df = df.sort_values(["split", "label", "path"], kind="stable").reset_index(drop=True)
    return df, class_names, dropped
