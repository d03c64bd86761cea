"""Typed training and compute configuration, validated up front with messages that name the fix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from food_assets.ml.errors import ConfigError

MODES = ("scratch", "feature_extract", "finetune")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
_NOT_HASHED = {"num_workers"}  # changes speed, not the result: a resume may use another value


@dataclass(frozen=True)
class ComputeConfig:
    """Where and how Lightning runs (the Dagster "GPU resource" maps onto this).

    The defaults pick a GPU when one is present and the CPU otherwise.

    Attributes:
        accelerator: `auto`, `cpu`, `gpu`, `cuda`, `mps`.
        devices: `auto`, a count, or a list of device indices.
        precision: `32-true`, `16-mixed` (CUDA), `bf16-mixed`, ...
        strategy: `auto`, `ddp`, `ddp_spawn`, `fsdp`, ...
        num_nodes: machines in a multi-node DDP run.
        deterministic: ask PyTorch for deterministic kernels (slower).
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    precision: str = "32-true"
    strategy: str = "auto"
    num_nodes: int = 1
    deterministic: bool = False

    def __post_init__(self) -> None:
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} is not supported; use one of {', '.join(PRECISIONS)}"
            )
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise ConfigError(f"num_nodes must be a positive integer (got {self.num_nodes!r})")
        if isinstance(self.devices, int) and self.devices == 0:
            raise ConfigError(
                "devices must not be 0: use a count >= 1, a list of indices or 'auto'"
            )

    def to_trainer_kwargs(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "precision": self.precision,
            "strategy": self.strategy,
            "num_nodes": self.num_nodes,
            "deterministic": self.deterministic,
        }


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. Invalid values raise `ConfigError` at construction.

    Attributes:
        mode: `scratch` (random init, every layer at `lr`), `feature_extract` (frozen
            pretrained backbone, BN statistics kept, only the head trains), `finetune`
            (pretrained backbone at `lr * backbone_lr_mult`, optionally frozen for the first
            `frozen_epochs`). None: `scratch` for scratch-family models, else `finetune`.
        weights: `imagenet`, `none` or a path (see `ml/models/weights.py`). None: the registry
            default (`none` in scratch mode).
        epochs: maximum epochs (early stopping may end sooner).
        batch_size: per device.
        lr: peak learning rate of the head (AdamW).
        backbone_lr_mult: backbone LR = lr * this, in finetune mode.
        weight_decay: AdamW decoupled weight decay (not applied to biases and norm weights).
        warmup_epochs: linear warm-up (may be fractional), then cosine decay, stepped per batch.
        label_smoothing: cross-entropy label smoothing for training.
        frozen_epochs: finetune only: head-only epochs before the backbone unfreezes.
        image_size: training/eval side; None: the model's default (224 for every CNN here).
        num_workers: DataLoader worker processes.
        seed: seeds Python, NumPy, torch and the workers.
        early_stopping_patience: epochs without a better val/acc_top1 before stopping;
            None or 0 disables early stopping.
        limit_train_batches / limit_val_batches: cap batches per epoch (int) or a fraction
            (float); for tests and benchmarks.
        build_kwargs: extra keyword arguments for the model builder (recorded in the card).
        precise_bn_batches: before each validation, recompute the running statistics of the
            BatchNorm layers that train over this many training batches (0 disables); see
            `callbacks.PreciseBatchNorm`.
    """

    mode: str | None = None
    weights: str | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    frozen_epochs: int = 0
    image_size: int | None = None
    num_workers: int = 2
    seed: int = 0
    early_stopping_patience: int | None = 5
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    precise_bn_batches: int = 16

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        check(
            self.mode is None or self.mode in MODES,
            f"mode {self.mode!r} is not one of {', '.join(MODES)}",
        )
        check(
            self.weights is None or (isinstance(self.weights, str) and self.weights.strip() != ""),
            "weights must be 'imagenet', 'none' or a file path (got an empty value)",
        )
        check(
            _is_int(self.epochs) and self.epochs >= 1, f"epochs must be >= 1 (got {self.epochs!r})"
        )
        check(
            _is_int(self.batch_size) and self.batch_size >= 1,
            f"batch_size must be >= 1 (got {self.batch_size!r})",
        )
        check(_is_num(self.lr) and self.lr > 0, f"lr must be > 0 (got {self.lr!r})")
        check(
            _is_num(self.backbone_lr_mult) and 0 < self.backbone_lr_mult <= 1,
            f"backbone_lr_mult must be in (0, 1] (got {self.backbone_lr_mult!r})",
        )
        check(
            _is_num(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be >= 0 (got {self.weight_decay!r})",
        )
        check(
            _is_num(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
            f"warmup_epochs must be in [0, epochs={self.epochs}] (got {self.warmup_epochs!r})",
        )
        check(
            _is_num(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            f"label_smoothing must be in [0, 1) (got {self.label_smoothing!r})",
        )
        check(
            _is_int(self.frozen_epochs) and 0 <= self.frozen_epochs < self.epochs,
            f"frozen_epochs must be in [0, epochs={self.epochs}) (got {self.frozen_epochs!r})",
        )
        check(
            self.frozen_epochs == 0 or self.mode in (None, "finetune"),
            "frozen_epochs only applies to mode finetune: set it to 0 or use mode: finetune",
        )
        check(
            self.image_size is None or (_is_int(self.image_size) and self.image_size >= 16),
            f"image_size must be >= 16 or null for the model default (got {self.image_size!r})",
        )
        check(
            _is_int(self.num_workers) and self.num_workers >= 0,
            f"num_workers must be >= 0 (got {self.num_workers!r})",
        )
        check(_is_int(self.seed), f"seed must be an integer (got {self.seed!r})")
        check(
            self.early_stopping_patience is None
            or (_is_int(self.early_stopping_patience) and self.early_stopping_patience >= 0),
            f"early_stopping_patience must be >= 0 or null (got {self.early_stopping_patience!r})",
        )
        for name in ("limit_train_batches", "limit_val_batches"):
            v = getattr(self, name)
            check(
                v is None or (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
                f"{name} must be a batch count >= 1, a fraction in (0, 1], or null (got {v!r})",
            )
        check(isinstance(self.build_kwargs, dict), "build_kwargs must be a mapping")
        check(
            _is_int(self.precise_bn_batches) and self.precise_bn_batches >= 0,
            f"precise_bn_batches must be >= 0 (got {self.precise_bn_batches!r})",
        )

    def resolve(self, *, family: str, default_weights: str, model_name: str) -> TrainConfig:
        """Fill in `mode` and `weights` for one model and check that they fit together."""
        mode = self.mode or ("scratch" if family == "scratch" else "finetune")
        weights = self.weights
        if mode == "scratch":
            if weights not in (None, "none"):
                raise ConfigError(
                    f"mode scratch trains {model_name} from random init, but weights={weights!r}: "
                    "use weights: none, or mode: finetune / feature_extract to start from weights"
                )
            weights = "none"
        else:
            weights = weights or default_weights
            if weights == "none":
                raise ConfigError(
                    f"mode {mode} needs pretrained weights but {model_name} would start from "
                    "random init (weights: none): set weights to imagenet or a file path, or "
                    "use mode: scratch"
                )
        if self.frozen_epochs and mode != "finetune":
            raise ConfigError("frozen_epochs only applies to mode finetune: set it to 0")
        return dataclasses.replace(self, mode=mode, weights=weights)

    def to_hashable(self) -> dict[str, Any]:
        """The fields that change what training produces (used to decide whether to resume)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_HASHED}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
