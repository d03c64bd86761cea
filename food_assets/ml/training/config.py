"""Typed training configuration (`TrainConfig`), validated up front with messages that name the
fix. The compute side (`ComputeConfig`) lives in `compute_config.py` and is re-exported here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from food_assets.ml.errors import ConfigError
from food_assets.ml.models.registry import ModelSpec, setting
from food_assets.ml.training.compute_config import (  # noqa: F401  (re-exported)
    PRECISIONS,
    ComputeConfig,
    accumulation_for,
)

MODES = ("scratch", "feature_extract", "finetune")
AUGMENTS = ("basic", "randaugment", "trivialaugment")
#: The TrainConfig fields of the accuracy recipe, recorded in the model card (`recipe`).
RECIPE_FIELDS = (
    "augment",
    "augment_magnitude",
    "color_jitter",
    "random_erasing",
    "mixup_alpha",
    "cutmix_alpha",
    "label_smoothing",
    "mixup_off_epochs",
    "ema_decay",
    "layer_decay",
    "frozen_epochs",
    "backbone_lr_mult",
)
# Change speed or what happens on a miss, not the result: a resume may use another value.
_NOT_HASHED = {"num_workers", "on_missing_weights"}


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained with Lightning. Invalid values raise `ConfigError` at
    construction.

    The defaults are the embedded sample's: a CPU trains every model in minutes
    (`configs/sample.yaml` spells them out). The Food-101 GPU recipes set their own values in
    `configs/food101.yaml`. The Dagster run config of every Lightning model is derived from this
    class (docs/adr/0008-one-config-source.md): a field here is a run-config key, with this
    default and description.
    """

    mode: str | None = setting(
        None,
        description="scratch (random init, every layer at lr) | feature_extract (frozen "
        "pretrained backbone, BN statistics kept, only the head trains) | finetune (backbone at "
        "lr * backbone_lr_mult, optionally frozen for frozen_epochs); null: finetune when the "
        "model has pretrained weights, scratch when it has none (custom_cnn)",
    )
    weights: str | None = setting(
        None,
        description="imagenet | none | /path/to/weights; null: the model's registry default "
        "(none in scratch mode)",
    )
    on_missing_weights: Literal["error", "scratch", "skip"] = setting(
        "scratch",
        description="when the pretrained weights cannot be found offline: fail (error), train "
        "from random init instead (scratch; recorded in the metadata as weights_fallback), or "
        "skip the model (skip)",
    )
    epochs: int = setting(4, description="maximum epochs (early stopping may end sooner)")
    batch_size: int = setting(32, description="images per batch, per device")
    lr: float = setting(2e-3, description="peak learning rate of the head (AdamW)")
    backbone_lr_mult: float = setting(
        0.1, description="finetune: backbone learning rate = lr * this, in (0, 1]"
    )
    weight_decay: float = setting(
        0.05, description="AdamW decoupled weight decay (not on biases and norm weights)"
    )
    warmup_epochs: float = setting(
        1.0, description="linear warm-up (may be fractional), then cosine decay, per batch"
    )
    label_smoothing: float = setting(0.1, description="cross-entropy label smoothing, in [0, 1)")
    frozen_epochs: int = setting(
        0, description="finetune only: head-only epochs before the backbone unfreezes"
    )
    image_size: int | None = setting(
        96, description="training and evaluation side in pixels; null: the model's own size"
    )
    num_workers: int = setting(0, description="DataLoader worker processes")
    seed: int = setting(0, description="seeds Python, NumPy, torch and the workers")
    early_stopping_patience: int | None = setting(
        5,
        description="epochs without a better val/acc_top1 before stopping; null or 0: never",
    )
    limit_train_batches: int | float | None = setting(
        None,
        description="batches per epoch: a count (>= 1) or a fraction in (0, 1); null: all. "
        "For tests and benchmarks",
        config_type=float | None,
    )
    limit_val_batches: int | float | None = setting(
        None,
        description="validation batches: a count (>= 1) or a fraction in (0, 1); null: all",
        config_type=float | None,
    )
    build_kwargs: dict[str, Any] = setting(
        default_factory=dict,
        description="extra keyword arguments for the model builder (e.g. drop_rate), recorded "
        "in the model card",
    )
    precise_bn_batches: int = setting(
        16,
        description="before each validation, recompute BatchNorm statistics over this many "
        "training batches (0: off)",
    )
    # The accuracy recipe (docs/evaluation.md, "The recipe"; ADR 0017). Every default is off:
    # the sample run trains as it did before these switches existed.
    augment: str = setting(
        "basic",
        description="train-time augmentation after the random crop and flip: basic (nothing "
        "more) | randaugment (RandAugment, 2 ops at augment_magnitude) | trivialaugment "
        "(TrivialAugmentWide); torchvision v2 ops",
    )
    augment_magnitude: int = setting(
        9, description="randaugment: magnitude of each op, in [0, 30] (timm's rand-m9 is 9)"
    )
    color_jitter: float = setting(
        0.0,
        description="brightness, contrast and saturation jitter strength (timm's 0.4), 0: off",
    )
    random_erasing: float = setting(
        0.0, description="probability of erasing a random rectangle of each image, in [0, 1)"
    )
    mixup_alpha: float = setting(
        0.0, description="mixup Beta(alpha, alpha) strength (timm Mixup), 0: off"
    )
    cutmix_alpha: float = setting(
        0.0, description="CutMix Beta(alpha, alpha) strength (timm Mixup), 0: off"
    )
    mixup_off_epochs: int = setting(
        0, description="the last N epochs train without mixup/CutMix (timm's mixup_off_epoch)"
    )
    ema_decay: float = setting(
        0.0,
        description="EMA of the weights (timm ModelEmaV3, warm-up ramped), in [0, 1), 0: off; "
        "both are validated, the better one goes into the bundle",
    )
    layer_decay: float | None = setting(
        None,
        description="finetune: layer-wise LR decay in (0, 1) over timm's group_matcher blocks "
        "(replaces backbone_lr_mult); null: off. A model without group_matcher keeps the "
        "head/backbone split (with a warning)",
    )

    def __post_init__(self) -> None:
        # Run config has one number type: a whole number >= 1 is a batch count (1.0 too).
        for name in ("limit_train_batches", "limit_val_batches"):
            v = getattr(self, name)
            if isinstance(v, float) and v >= 1 and v.is_integer():
                object.__setattr__(self, name, int(v))
        fields = vars(self)
        for passes, message in _TRAIN_CHECKS:
            if not passes(self):
                raise ConfigError(message.format_map(fields))

    def resolve(self, *, default_weights: str, model_name: str) -> TrainConfig:
        """Fill in `mode` and `weights` for one model and check that they fit together.

        A model whose registry default is `none` (no pretrained weights exist) trains from
        scratch unless `mode` says otherwise; every other model fine-tunes.
        """
        mode = self.mode or ("scratch" if default_weights == "none" else "finetune")
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

    @property
    def mixing(self) -> bool:
        """Whether mixup or CutMix is on (timm `Mixup` and soft-target cross-entropy)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def recipe(self) -> dict[str, Any]:
        """The accuracy-recipe switches as they were set (model card and run metadata)."""
        return {k: getattr(self, k) for k in RECIPE_FIELDS}

    def to_hashable(self) -> dict[str, Any]:
        """The fields that change what training produces (used to decide whether to resume)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_HASHED}


# TrainConfig's checks as (passes, message) rows, run in order; the first failing row's message,
# filled in from the fields, is raised. A row may assume the rows above it passed (warmup_epochs
# is compared with epochs), which is why this is a sequence and the lambdas are lazy.
_TRAIN_CHECKS: tuple[tuple[Callable[[TrainConfig], bool], str], ...] = (
    (
        lambda c: c.mode is None or c.mode in MODES,
        f"mode {{mode!r}} is not one of {', '.join(MODES)}",
    ),
    (
        lambda c: c.weights is None or (isinstance(c.weights, str) and c.weights.strip() != ""),
        "weights must be 'imagenet', 'none' or a file path (got an empty value)",
    ),
    (lambda c: _is_int(c.epochs) and c.epochs >= 1, "epochs must be >= 1 (got {epochs!r})"),
    (
        lambda c: _is_int(c.batch_size) and c.batch_size >= 1,
        "batch_size must be >= 1 (got {batch_size!r})",
    ),
    (lambda c: _is_num(c.lr) and c.lr > 0, "lr must be > 0 (got {lr!r})"),
    (
        lambda c: _is_num(c.backbone_lr_mult) and 0 < c.backbone_lr_mult <= 1,
        "backbone_lr_mult must be in (0, 1] (got {backbone_lr_mult!r})",
    ),
    (
        lambda c: _is_num(c.weight_decay) and c.weight_decay >= 0,
        "weight_decay must be >= 0 (got {weight_decay!r})",
    ),
    (
        lambda c: _is_num(c.warmup_epochs) and 0 <= c.warmup_epochs <= c.epochs,
        "warmup_epochs must be in [0, epochs={epochs}] (got {warmup_epochs!r})",
    ),
    (
        lambda c: _is_num(c.label_smoothing) and 0 <= c.label_smoothing < 1,
        "label_smoothing must be in [0, 1) (got {label_smoothing!r})",
    ),
    (
        lambda c: _is_int(c.frozen_epochs) and 0 <= c.frozen_epochs < c.epochs,
        "frozen_epochs must be in [0, epochs={epochs}) (got {frozen_epochs!r})",
    ),
    (
        lambda c: c.frozen_epochs == 0 or c.mode in (None, "finetune"),
        "frozen_epochs only applies to mode finetune: set it to 0 or use mode: finetune",
    ),
    (
        lambda c: c.image_size is None or (_is_int(c.image_size) and c.image_size >= 16),
        "image_size must be >= 16 or null for the model default (got {image_size!r})",
    ),
    (
        lambda c: _is_int(c.num_workers) and c.num_workers >= 0,
        "num_workers must be >= 0 (got {num_workers!r})",
    ),
    (lambda c: _is_int(c.seed), "seed must be an integer (got {seed!r})"),
    (
        lambda c: (
            c.early_stopping_patience is None
            or (_is_int(c.early_stopping_patience) and c.early_stopping_patience >= 0)
        ),
        "early_stopping_patience must be >= 0 or null (got {early_stopping_patience!r})",
    ),
    (
        lambda c: _is_batch_limit(c.limit_train_batches),
        "limit_train_batches must be a batch count >= 1, a fraction in (0, 1], or null "
        "(got {limit_train_batches!r})",
    ),
    (
        lambda c: _is_batch_limit(c.limit_val_batches),
        "limit_val_batches must be a batch count >= 1, a fraction in (0, 1], or null "
        "(got {limit_val_batches!r})",
    ),
    (lambda c: isinstance(c.build_kwargs, dict), "build_kwargs must be a mapping"),
    (
        lambda c: c.on_missing_weights in ("error", "scratch", "skip"),
        "on_missing_weights {on_missing_weights!r} is not one of error, scratch, skip",
    ),
    (
        lambda c: _is_int(c.precise_bn_batches) and c.precise_bn_batches >= 0,
        "precise_bn_batches must be >= 0 (got {precise_bn_batches!r})",
    ),
    (
        lambda c: c.augment in AUGMENTS,
        f"augment {{augment!r}} is not one of {', '.join(AUGMENTS)}",
    ),
    (
        lambda c: _is_int(c.augment_magnitude) and 0 <= c.augment_magnitude <= 30,
        "augment_magnitude must be an integer in [0, 30] (got {augment_magnitude!r})",
    ),
    (
        lambda c: _is_num(c.color_jitter) and 0 <= c.color_jitter <= 1,
        "color_jitter must be in [0, 1] (0: off, timm uses 0.4; got {color_jitter!r})",
    ),
    (
        lambda c: _is_num(c.random_erasing) and 0 <= c.random_erasing < 1,
        "random_erasing must be a probability in [0, 1) (got {random_erasing!r})",
    ),
    (
        lambda c: _is_num(c.mixup_alpha) and c.mixup_alpha >= 0,
        "mixup_alpha must be >= 0 (0: off; got {mixup_alpha!r})",
    ),
    (
        lambda c: _is_num(c.cutmix_alpha) and c.cutmix_alpha >= 0,
        "cutmix_alpha must be >= 0 (0: off; got {cutmix_alpha!r})",
    ),
    (
        lambda c: _is_int(c.mixup_off_epochs) and 0 <= c.mixup_off_epochs < c.epochs,
        "mixup_off_epochs must be in [0, epochs={epochs}) (got {mixup_off_epochs!r})",
    ),
    (
        lambda c: c.mixup_off_epochs == 0 or c.mixing,
        "mixup_off_epochs is set but mixing is off: set mixup_alpha or cutmix_alpha > 0, or "
        "mixup_off_epochs: 0",
    ),
    (
        lambda c: _is_num(c.ema_decay) and 0 <= c.ema_decay < 1,
        "ema_decay must be in [0, 1) (0: off, e.g. 0.999; got {ema_decay!r})",
    ),
    (
        lambda c: c.layer_decay is None or (_is_num(c.layer_decay) and 0 < c.layer_decay < 1),
        "layer_decay must be in (0, 1) or null for off (e.g. 0.9; got {layer_decay!r})",
    ),
    (
        lambda c: c.layer_decay is None or c.mode in (None, "finetune"),
        "layer_decay only applies to mode finetune: set it to null or use mode: finetune",
    ),
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_batch_limit(v: Any) -> bool:
    """A batch count >= 1, a fraction in (0, 1), or None (Lightning's `limit_*_batches`)."""
    return v is None or (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1)


#: The hook an entry without its own `fit` trains with (`fit.fit_hook`), by name: the Dagster
#: side hashes it into the model's code version without importing Lightning.
DEFAULT_FIT = "food_assets.ml.training.fit:fit_lightning"


def settings_class(spec: ModelSpec) -> type:
    """A registry entry's settings dataclass: its own (`ClipConfig`), else `TrainConfig`."""
    return spec.config_cls or TrainConfig


def make_config(spec: ModelSpec, **overrides: Any) -> Any:
    """The entry's settings: its settings class with the entry's defaults, then `overrides`."""
    return settings_class(spec)(**{**spec.config_defaults, **overrides})
