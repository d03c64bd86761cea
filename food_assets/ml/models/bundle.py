"""The trained-model bundle: the one folder every `model_<name>` asset ends in.

`model.safetensors` holds the state dict (loading it executes no code, so a bundle from an
untrusted place is safe to open) and `card.json` holds what inference needs: class names,
preprocessing, how to rebuild the network, the calibration temperature.

`ml.models` does not import `ml.export` (an import-linter contract): the exporter reads
`ModelCard` from here, and the card's preprocess schema lives with `Preprocess` in
`ml/data/transforms.py`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from food_assets.ml.artifacts import atomic_dir
from food_assets.ml.data.transforms import Preprocess, validate_preprocess
from food_assets.ml.errors import CheckpointError

CARD_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


@dataclass
class ModelCard:
    name: str
    class_names: list[str]
    preprocess: Preprocess
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    mode: str = "finetune"
    weights_source: str = "none"
    temperature: float = 1.0
    metrics: dict[str, float] = field(default_factory=dict)
    # How the weights were trained: the accuracy-recipe switches (augment, mixup, EMA, layer
    # decay, ...) and which weights were kept (`weights_kept`: raw or ema, with both val
    # accuracies). Empty for models not trained with Lightning.
    recipe: dict[str, Any] = field(default_factory=dict)
    version: int = CARD_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Validate and parse; anything unexpected is a CheckpointError, never executed."""
        if not isinstance(d, dict):
            raise CheckpointError("card.json is not a JSON object")
        required = {"name", "class_names", "preprocess"}
        missing = required - d.keys()
        if missing:
            raise CheckpointError(f"card.json lacks {sorted(missing)}")
        unknown = d.keys() - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise CheckpointError(f"card.json has unknown fields {sorted(unknown)}")
        names = d["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
            raise CheckpointError("card.json: class_names must be a non-empty list of strings")
        if len(set(names)) != len(names):
            raise CheckpointError("card.json: class_names has duplicates")
        build_kwargs = d.get("build_kwargs") or {}
        if not isinstance(build_kwargs, dict) or not all(isinstance(k, str) for k in build_kwargs):
            raise CheckpointError("card.json: build_kwargs must be an object with string keys")
        try:
            pre = validate_preprocess(d["preprocess"], CheckpointError)
            temperature = float(d.get("temperature", 1.0))
            metrics = {str(k): float(v) for k, v in (d.get("metrics") or {}).items()}
            version = int(d.get("version", CARD_VERSION))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(
                f"card.json: bad preprocess, temperature or metrics ({exc})"
            ) from exc
        if not (temperature > 0):
            raise CheckpointError("card.json: temperature must be positive")
        recipe = d.get("recipe") or {}
        if not isinstance(recipe, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str | int | float | bool))
            for k, v in recipe.items()
        ):
            raise CheckpointError("card.json: recipe must be an object of plain values")
        return cls(
            name=str(d["name"]),
            class_names=list(names),
            preprocess=pre,
            build_kwargs=dict(build_kwargs),
            mode=str(d.get("mode", "finetune")),
            weights_source=str(d.get("weights_source", "none")),
            temperature=temperature,
            metrics=metrics,
            recipe=dict(recipe),
            version=version,
        )


@dataclass
class FitResult:
    """What every model-producing function returns (Lightning training, CLIP zero-shot, probe).

    The Dagster layer turns it into asset metadata and MLflow records; `metadata` holds
    JSON-friendly figures (params, GMACs, best val accuracy, train seconds, ...), `history` one
    row per epoch (may be empty), `plots` name -> PNG path.
    """

    bundle_dir: Path
    card: ModelCard
    metadata: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    plots: dict[str, Path] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


def save_bundle(directory: str | Path, model: nn.Module, card: ModelCard) -> Path:
    """Write model.safetensors + card.json into `directory`, replacing it atomically."""
    from safetensors.torch import save

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(directory) as tmp:
        # Serialise in memory, then write: a full disk is then an OSError (-> ArtifactWriteError
        # naming the fix), not safetensors' own error type.
        (tmp / WEIGHTS_FILE).write_bytes(save(_dedupe_shared(state)))
        (tmp / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    return directory


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights); store independent copies.
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def save_card(directory: str | Path, card: ModelCard) -> Path:
    """Rewrite only card.json (e.g. with a fitted temperature), atomically."""
    from food_assets.ml.artifacts import write_json

    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{directory} is not a model bundle (no {WEIGHTS_FILE})")
    return write_json(directory / CARD_FILE, card.to_dict())


def load_card(directory: str | Path) -> ModelCard:
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a model bundle (no {CARD_FILE}); materialize the model asset "
            "first or point at a folder written by it"
        )
    try:
        return ModelCard.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def load_bundle(directory: str | Path, *, map_location: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the network from the registry and load its weights strictly; eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from food_assets.ml.models.registry import create_model

    directory = Path(directory)
    card = load_card(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupt or not a safetensors file ({exc})") from exc
    try:
        model = create_model(
            card.name, num_classes=card.num_classes, weights="none", **card.build_kwargs
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{directory}/card.json: build_kwargs {card.build_kwargs} do not fit model "
            f"{card.name!r} ({exc})"
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights} does not fit model {card.name!r} with {card.num_classes} classes: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return model.eval(), card
