"""The checkpoint folder of a training run: which run config it belongs to, whether to resume.

```
<out_dir>/checkpoints/last.ckpt         # every epoch; resumed from if the run config matches
<out_dir>/checkpoints/best.ckpt         # best val/acc_top1 (weights only)
<out_dir>/checkpoints/best_ema.ckpt     # best val/acc_top1_ema, with ema_decay > 0 (weights only)
<out_dir>/checkpoints/run_config.json   # the config (and its hash) the checkpoints belong to
```

Everything here reads; `train_model` decides what to write. Checkpoints are loaded with
`weights_only=True`, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from food_assets.ml.data.splits import SplitManifest
from food_assets.ml.errors import CheckpointError
from food_assets.ml.models.registry import ModelSpec, get_model_spec
from food_assets.ml.training.config import ComputeConfig, TrainConfig

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
RUN_CONFIG = "run_config.json"
MONITOR = "val/acc_top1"  # what best.ckpt keeps the best of
BEST_EMA_CKPT = "best_ema.ckpt"
MONITOR_EMA = "val/acc_top1_ema"  # what best_ema.ckpt keeps the best of
EMA_PREFIX = "ema.module."  # the weight EMA's keys in a ClassifierModule state dict


def get_config_hash(
    model: ModelSpec | str, splits: SplitManifest, cfg: TrainConfig, compute: ComputeConfig
) -> tuple[str, dict[str, Any]]:
    """Hash of everything that changes what training produces (data content included)."""
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    cfg = cfg.resolve(default_weights=spec.default_weights, model_name=spec.name)
    record = {
        "model": spec.name,
        "class_names": list(splits.class_names),
        "manifest_sha256": splits.digest(),  # the one manifest identity
        "train": cfg.to_hashable(),
        "compute": compute.to_hashable(),
    }
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), record


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling code; CheckpointError if unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, unpickling and EOF errors come in many types
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({type(exc).__name__}); delete it (or its folder) to "
            "start this training run over"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint; delete it to start over")
    return ckpt


def plan_resume(ckpt_dir: Path, config_hash: str) -> tuple[Path | None, str]:
    """Decide whether to resume: (last.ckpt or None, a note saying why).

    Reads only: nothing is moved or written here, so a corrupt last.ckpt is an error before the
    run folder is touched.
    """
    last = ckpt_dir / LAST_CKPT
    if not last.exists():
        return None, ""
    try:
        stored = json.loads((ckpt_dir / RUN_CONFIG).read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        stored = None
    if stored != config_hash:
        return None, (
            f"{last} belongs to another run config (or has no {RUN_CONFIG}): started fresh; the "
            f"old checkpoints were moved to {ckpt_dir.name}.previous"
        )
    load_checkpoint_file(last)  # a corrupt file is an error now, not a crash mid-fit
    return last, f"resumed from {last}"


def history_rows(ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch rows `TrainingHistory` saved in a checkpoint ([] when it has none)."""
    state = (ckpt.get("callbacks") or {}).get("TrainingHistory") or {}
    return [dict(r) for r in state.get("rows", [])]


def choose_weights(history: pd.DataFrame) -> tuple[str, float, float]:
    """(`raw` or `ema`, best raw val accuracy, best EMA val accuracy or NaN).

    The EMA's weights are kept only when their best val accuracy is strictly higher: a tie
    keeps the weights the optimizer produced.
    """
    raw = float(history[MONITOR].max()) if len(history) else float("nan")
    if MONITOR_EMA not in history or not history[MONITOR_EMA].notna().any():
        return "raw", raw, float("nan")
    ema = float(history[MONITOR_EMA].max())
    return ("ema" if ema > raw else "raw"), raw, ema


def strip_model_prefix(
    state: dict[str, torch.Tensor], prefix: str = "model."
) -> dict[str, torch.Tensor]:
    """A LightningModule state dict -> the wrapped model's (`prefix` keys, prefix dropped).

    `prefix="model."` gives the raw weights, `EMA_PREFIX` the weight EMA's.
    """
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


__all__ = [
    "BEST_CKPT",
    "BEST_EMA_CKPT",
    "EMA_PREFIX",
    "MONITOR_EMA",
    "CHECKPOINT_DIR",
    "LAST_CKPT",
    "MONITOR",
    "RUN_CONFIG",
    "choose_weights",
    "get_config_hash",
    "history_rows",
    "load_checkpoint_file",
    "plan_resume",
    "strip_model_prefix",
]
