"""`food_images_raw` (scan, verify, quarantine) and `food_splits` (stratified, seeded splits),
with the data-integrity checks."""

# No `from __future__ import annotations` in asset modules: Dagster reads the real annotation
# objects to infer config and resource types.

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from food_assets import layout
from food_assets.defs.assets._common import (
    check_result,
    code_version,
    md_table,
    table_metadata,
    user_errors,
)
from food_assets.defs.resources import ArtifactStore, QualityGates
from food_assets.ml import artifacts
from food_assets.ml.data.images import DEFAULT_MAX_PIXELS
from food_assets.ml.data.lineage import raw_manifest_digest, short, splits_digest
from food_assets.ml.data.raw import RawScan, collect_raw_images
from food_assets.ml.data.sample import SampleSpec
from food_assets.ml.data.splits import SPLITS, SplitManifest, make_splits
from food_assets.ml.quality import (
    check_every_class_in_every_split,
    check_no_content_leak,
    check_no_image_in_two_splits,
)


class DataSourceConfig(dg.Config):
    """Which images to use. The default, `sample`, needs no network and no files."""

    source: Literal["sample", "imagefolder", "food101"] = Field(
        default="sample", description="sample (embedded synthetic set) | imagefolder | food101"
    )
    root: str | None = Field(
        default=None,
        description="imagefolder: root/<class>/<image>; food101: folder holding food-101/ "
        "(default <data_dir>/sources/food101); sample: where to generate it",
    )
    download: bool = Field(default=False, description="food101 only: download when missing")
    sample_seed: int = 0
    sample_num_classes: int = Field(default=10, ge=2, le=10)
    sample_images_per_class: int = Field(default=40, ge=4)
    sample_image_size: int = Field(default=128, ge=32, le=1024)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, description="larger images: quarantined")
    scan_workers: int | None = Field(default=None, description="decoding threads (default: CPUs)")


@dataclass(frozen=True)
class RawImages:
    """`food_images_raw`'s value: the manifest of good images and the quarantine list."""

    source: str
    root: Path
    manifest_path: Path
    quarantine_path: Path
    num_images: int
    num_quarantined: int

    @property
    def quarantined_share(self) -> float:
        total = self.num_images + self.num_quarantined
        return self.num_quarantined / total if total else 0.0

    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.manifest_path)


#: Scanning, sample generation and splitting: a change in `food_assets.ml.data` makes the data
#: assets (and so everything downstream) stale (ADR 0011).
DATA_CODE_VERSION = code_version("data", modules=["food_assets.ml.data"])


@dg.asset(group_name="data", kinds={"python", "parquet"}, code_version=DATA_CODE_VERSION)
def food_images_raw(
    context: dg.AssetExecutionContext, config: DataSourceConfig, artifact_store: ArtifactStore
) -> dg.MaterializeResult:
    """Every image of the chosen source, fully decoded; unreadable files are quarantined with
    their reason and never reach training."""
    with user_errors():
        root = artifact_store.root  # the local copy; the IO manager publishes the folder
        raw = collect_raw_images(
            config.source,
            config.root,
            sources_dir=artifact_store.sources_dir(),
            manifest_path=layout.raw_manifest_file(root),
            quarantine_path=layout.raw_quarantine_file(root),
            sample=SampleSpec(
                seed=config.sample_seed,
                num_classes=config.sample_num_classes,
                images_per_class=config.sample_images_per_class,
                image_size=config.sample_image_size,
            ),
            download=config.download,
            max_pixels=config.max_pixels,
            workers=config.scan_workers,
            log=context.log.info,
        )
    for row in raw.scan.quarantine.itertuples():
        context.log.warning(f"quarantined {row.path}: {row.reason}")
    return dg.MaterializeResult(
        value=_raw_images_value(config.source, raw),
        metadata={**_raw_metadata(config.source, raw, artifact_store), **_source_settings(config)},
        # The content, not the run: the same images keep the version, new ones make every
        # downstream asset stale (ADR 0023).
        data_version=dg.DataVersion(
            short(raw_manifest_digest(raw.scan.manifest, raw.listing.root))
        ),
    )


def _source_settings(config: DataSourceConfig) -> dict[str, Any]:
    """The settings that decided which images these are, as the metadata reports them (a value
    the run did not use must never be shown: the sample keys only for the sample source)."""
    settings: dict[str, Any] = {"max_pixels": config.max_pixels}
    if config.source == "sample":
        settings.update(
            sample_seed=config.sample_seed,
            sample_num_classes=config.sample_num_classes,
            sample_images_per_class=config.sample_images_per_class,
            sample_image_size=config.sample_image_size,
        )
    return settings


def _raw_images_value(source: str, raw: RawScan) -> RawImages:
    return RawImages(
        source=source,
        root=raw.listing.root,
        manifest_path=raw.manifest_path,
        quarantine_path=raw.quarantine_path,
        num_images=len(raw.scan.manifest),
        num_quarantined=len(raw.scan.quarantine),
    )


def _raw_metadata(source: str, raw: RawScan, artifact_store: ArtifactStore) -> dict[str, Any]:
    manifest, quarantine = raw.scan.manifest, raw.scan.quarantine
    per_class = manifest.groupby("label").size().rename("images").reset_index()
    return {
        **table_metadata(manifest),  # the manifest's rows and columns, natively in the UI
        "source": source,
        "root": dg.MetadataValue.path(str(raw.listing.root)),
        "num_images": len(manifest),
        "num_classes": int(manifest["label"].nunique()),
        "num_quarantined": len(quarantine),
        "quarantined_share": round(raw.scan.quarantined_share, 4),
        "hidden_files_skipped": len(raw.listing.skipped_hidden),
        "quarantine": md_table(quarantine, max_rows=100),
        "images_per_class": md_table(per_class, max_rows=101),
        "modes": md_table(manifest.groupby("mode").size().rename("images").reset_index()),
        "manifest": dg.MetadataValue.path(artifact_store.location(raw.manifest_path)),
    }


class SplitConfig(dg.Config):
    """How to split: fractions of each class, and the seed."""

    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="ignored when the source has an official test split"
    )
    seed: int = 0


@dg.asset(group_name="data", kinds={"python", "parquet"}, code_version=DATA_CODE_VERSION)
def food_splits(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    food_images_raw: RawImages,
    artifact_store: ArtifactStore,
) -> dg.MaterializeResult:
    """Stratified train/val/test splits, seeded and independent of file listing order; the
    official Food-101 test split is kept as is. Written as Parquet with the class map."""
    with user_errors():
        manifest = food_images_raw.manifest()
        frame, class_names, dropped = make_splits(
            manifest,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )
        root = artifact_store.root
        path = artifacts.write_parquet(layout.splits_file(root), frame)
        artifacts.write_json(layout.class_map_file(root), {i: c for i, c in enumerate(class_names)})
    official = "source_split" in manifest and bool((manifest["source_split"] == "test").any())
    counts = frame.pivot_table(index="label", columns="split", values="path", aggfunc="count")
    counts = counts.reindex(columns=list(SPLITS)).fillna(0).astype(int).reset_index()
    if dropped:
        context.log.warning(f"dropped {dropped} train images identical to a test image")
    raw_digest = raw_manifest_digest(manifest, food_images_raw.root)
    return dg.MaterializeResult(
        value=SplitManifest(path=path, class_names=class_names, source=food_images_raw.source),
        metadata={
            **table_metadata(frame),
            "num_classes": len(class_names),
            **{f"num_{s}": int((frame["split"] == s).sum()) for s in SPLITS},
            "dropped_train_duplicates_of_test": dropped,
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            # The official Food-101 test split is kept as is: the configured fraction was not used.
            "test_fraction": "official split" if official else config.test_fraction,
            "per_class": md_table(counts, max_rows=101),
            "splits": dg.MetadataValue.path(artifact_store.location(path)),
        },
        # From the inputs and the config: same images and config, same splits (ADR 0023).
        data_version=dg.DataVersion(short(splits_digest(raw_digest, config.model_dump()))),
    )


@dg.asset_check(asset=food_images_raw, blocking=True, description="quarantined share under limit")
def quarantine_share_under_limit(
    food_images_raw: RawImages, quality: QualityGates
) -> dg.AssetCheckResult:
    share = food_images_raw.quarantined_share
    limit = quality.max_quarantine_share
    return dg.AssetCheckResult(
        passed=share <= limit,
        description=f"{share:.2%} of files quarantined (limit {limit:.2%})",
        metadata={"quarantined_share": share, "limit": limit},
    )


# The three split checks are thin wrappers: the decisions live in `food_assets.ml.quality`,
# where they are tested on leaky manifests that `make_splits` never writes.


@dg.asset_check(asset=food_splits, blocking=True, description="every class in every split")
def every_class_in_every_split(food_splits: SplitManifest) -> dg.AssetCheckResult:
    return check_result(
        check_every_class_in_every_split(food_splits.frame(), food_splits.class_names)
    )


@dg.asset_check(asset=food_splits, blocking=True, description="no image in two splits")
def no_image_in_two_splits(food_splits: SplitManifest) -> dg.AssetCheckResult:
    return check_result(check_no_image_in_two_splits(food_splits.frame()))


@dg.asset_check(
    asset=food_splits, blocking=True, description="no identical content in train and test"
)
def no_content_leak_train_test(food_splits: SplitManifest) -> dg.AssetCheckResult:
    return check_result(check_no_content_leak(food_splits.frame()))
