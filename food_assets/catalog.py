"""Where materialized models live on disk, for the CLI and the demo (no Dagster, no torch).

Layout under the data folder (`FOOD_ASSETS_DATA_DIR`, default `./data`):

    artifacts/model_<name>/bundle/          the trained-model bundle (model.safetensors, card.json)
    artifacts/onnx_<name>/model.onnx        the ONNX export (class names, preprocessing and
                                            temperature in its metadata)
    artifacts/evaluation_<name>/metrics.json
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    return Path(override or os.environ.get("FOOD_ASSETS_DATA_DIR", "data")).expanduser().resolve()


@dataclass(frozen=True)
class MaterializedModel:
    name: str
    bundle_dir: Path | None
    onnx_path: Path | None
    metrics: dict

    @property
    def best_path(self) -> Path | None:
        """What inference should load: the ONNX export if there is one, else the bundle."""
        return self.onnx_path or self.bundle_dir


def bundle_path(name: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / "artifacts" / f"model_{name}" / "bundle"


def onnx_path(name: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / "artifacts" / f"onnx_{name}" / "model.onnx"


def list_materialized(root: Path | None = None) -> list[MaterializedModel]:
    """Every model with a bundle or an ONNX export on disk, sorted by name."""
    root = root or data_dir()
    found: dict[str, MaterializedModel] = {}
    artifacts = root / "artifacts"
    if not artifacts.is_dir():
        return []
    names = {
        p.name.split("_", 1)[1]
        for p in artifacts.iterdir()
        if p.is_dir() and p.name.startswith(("model_", "onnx_")) and p.name != "model_comparison"
    }
    for name in sorted(names):
        bundle = bundle_path(name, root)
        onnx = onnx_path(name, root)
        metrics_file = artifacts / f"evaluation_{name}" / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        except (OSError, ValueError):
            metrics = {}
        has_bundle = (bundle / "card.json").is_file()
        if has_bundle or onnx.is_file():
            found[name] = MaterializedModel(
                name=name,
                bundle_dir=bundle if has_bundle else None,
                onnx_path=onnx if onnx.is_file() else None,
                metrics=metrics,
            )
    return list(found.values())
