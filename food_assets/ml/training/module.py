"""The LightningModule that trains every registry classifier: scratch, feature_extract, finetune."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics.classification import MulticlassAccuracy

from food_assets.ml.models import recipe
from food_assets.ml.models.weights import get_head_prefix

log = logging.getLogger(__name__)


class WarmupCosine:
    """LR factor: linear warm-up from ~0 to 1 over `warmup_steps`, then cosine to `min_factor`.

    A class rather than a closure so that the scheduler state pickles (DDP spawn) and lands in
    checkpoints as plain numbers (loadable with `weights_only=True`).
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_factor: float = 0.01) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.min_factor = float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class ClassifierModule(pl.LightningModule):
    """Wraps a registry model: losses, metrics, parameter groups, freezing, schedule.

    Args:
        model: a registry model (`forward` returns logits); the classifier head is found with
            `get_classifier()` and gets its own parameter groups.
        num_classes: number of classes (for the metrics).
        mode: `scratch`, `feature_extract` or `finetune`.
        lr, backbone_lr_mult, weight_decay, warmup_epochs, label_smoothing, frozen_epochs,
        mixup_alpha, cutmix_alpha, mixup_off_epochs, ema_decay, layer_decay: as in
            `TrainConfig`.

    The recipe's switches act here: mixup/CutMix (timm `Mixup`, soft-target cross-entropy with
    the label smoothing folded into the targets) in `training_step`, switched off for the last
    `mixup_off_epochs`; the weight EMA (`self.ema`, a timm `ModelEmaV3` submodule, so it is in
    every checkpoint and a resume restores it) updated after each optimizer step and validated
    beside the raw weights (`val/acc_top1_ema`); layer-wise LR decay in `configure_optimizers`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        mode: str,
        lr: float,
        backbone_lr_mult: float = 0.1,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1.0,
        label_smoothing: float = 0.1,
        frozen_epochs: int = 0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_off_epochs: int = 0,
        ema_decay: float = 0.0,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        # Plain numbers only: they go into checkpoints, which are read with weights_only=True.
        # logger=False: the Dagster layer logs run params itself, and MLflow refuses a param
        # logged twice with another value.
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        self.head_prefix = get_head_prefix(model)
        if self.head_prefix is None and mode != "scratch":
            raise ValueError(
                f"{type(model).__name__} has no get_classifier(): cannot split head/backbone"
            )
        self.mixup = None
        self.criterion: nn.Module = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = recipe.create_mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            # Mixup yields smoothed soft targets even when switched off, so one loss serves.
            self.criterion = recipe.create_soft_target_loss()
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # Built before any freezing: an EMA copy of the model as it starts (head included).
        self.ema = recipe.create_ema(model, ema_decay) if ema_decay > 0 else None
        self.val_acc_ema = (
            MulticlassAccuracy(num_classes=num_classes, average="micro")
            if self.ema is not None
            else None
        )
        self.backbone_frozen = False
        self.use_channels_last = False
        # Set by the compute recipe (ComputeConfig.channels_last); None (no recipe): on with CUDA.
        self.channels_last: bool | None = None
        if mode == "feature_extract":
            self.set_backbone_trainable(False)

    # ---------------------------------------------------------------- head / backbone

    def _is_head(self, name: str) -> bool:
        p = self.head_prefix
        return p is not None and (name == p or name.startswith(p + "."))

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze every parameter outside the classifier head."""
        for name, param in self.model.named_parameters():
            if not self._is_head(name):
                param.requires_grad_(trainable)
        self.backbone_frozen = not trainable
        self.train(self.training)  # re-apply the BN policy below

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if mode and self.backbone_frozen:
            # A frozen backbone keeps its ImageNet BN statistics: updating running stats on a
            # small food batch would shift features the frozen weights were never trained on.
            for name, module in self.model.named_modules():
                if isinstance(module, _BatchNorm) and not self._is_head(name):
                    module.eval()
        if getattr(self, "ema", None) is not None:
            self.ema.eval()  # the average is never trained: its BN statistics are averaged too
        return self

    # ---------------------------------------------------------------- optimisation

    def _param_groups(self) -> list[dict[str, Any]]:
        """Head/backbone groups, or layer-wise decayed ones when `layer_decay` is set."""
        hp = self.hparams
        if hp.mode == "finetune" and hp.layer_decay is not None:
            if recipe.supports_layer_decay(self.model):
                return recipe.layer_decay_groups(
                    self.model, lr=hp.lr, weight_decay=hp.weight_decay, layer_decay=hp.layer_decay
                )
            log.warning(
                "layer_decay=%s not applied: %s has no group_matcher; the head/backbone split "
                "(backbone at lr * backbone_lr_mult) is used instead",
                hp.layer_decay,
                type(self.model).__name__,
            )
        return self._head_backbone_groups()

    def _head_backbone_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        backbone_lr = hp.lr * (hp.backbone_lr_mult if hp.mode == "finetune" else 1.0)
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            head = self._is_head(name)
            if hp.mode == "feature_extract" and not head:
                continue
            # No decay on biases and norm scales: it only shrinks them towards 0 for no gain.
            groups.setdefault((head, param.ndim <= 1), []).append(param)
        param_groups = []
        for head in (True, False):  # head first: param_groups[0] is the LR logged as "lr"
            for no_decay in (False, True):
                params = groups.get((head, no_decay))
                if params:
                    param_groups.append(
                        {
                            "params": params,
                            "lr": hp.lr if head else backbone_lr,
                            "weight_decay": 0.0 if no_decay else hp.weight_decay,
                            "name": ("head" if head else "backbone") + ("_nd" if no_decay else ""),
                        }
                    )
        return param_groups

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        param_groups = self._param_groups()
        optimizer = torch.optim.AdamW(param_groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(total / max(self.trainer.max_epochs or 1, 1), 1.0)
        schedule = WarmupCosine(round(hp.warmup_epochs * per_epoch), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ---------------------------------------------------------------- hooks

    def on_fit_start(self) -> None:
        if self.channels_last or (self.channels_last is None and self.device.type == "cuda"):
            # NHWC lets cuDNN use tensor-core convolution kernels without layout transposes.
            self.model.to(memory_format=torch.channels_last)
            if self.ema is not None:
                self.ema.to(memory_format=torch.channels_last)
            self.use_channels_last = True

    def on_train_epoch_start(self) -> None:
        if self.hparams.mode == "finetune" and self.hparams.frozen_epochs:
            frozen = self.current_epoch < self.hparams.frozen_epochs
            if frozen != self.backbone_frozen:
                self.set_backbone_trainable(not frozen)
        if self.mixup is not None:
            # timm's mixup_off_epoch: the last epochs see clean images (smoothed targets still).
            max_epochs = int(self.trainer.max_epochs or 0)
            off_from = max_epochs - self.hparams.mixup_off_epochs
            self.mixup.mixup_enabled = self.current_epoch < off_from

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        target = y
        if self.mixup is not None and self.mixup.mixup_enabled and x.shape[0] > 1:
            if x.shape[0] % 2:  # timm's Mixup pairs image i with image n-1-i: needs an even n
                x, y = x[:-1], y[:-1]
            x, target = self.mixup(x, y)
        elif self.mixup is not None:  # switched off (or one image): timm's targets at lam=1
            target = _smoothed_one_hot(y, self.mixup.num_classes, self.mixup.label_smoothing)
        logits = self(x)
        loss = self.criterion(logits, target)
        self.train_acc(logits, y)  # against the dominant (unmixed) label
        n = y.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("train/acc_top1", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        # Mean head LR over the epoch: one figure per epoch that follows the schedule.
        self.log("lr", lr, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        # Validation loss without label smoothing: a true NLL, comparable across configs.
        loss = nn.functional.cross_entropy(logits, y)
        self.val_acc(logits, y)
        n = y.shape[0]
        self.log("val/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("val/acc_top1", self.val_acc, on_step=False, on_epoch=True, batch_size=n)
        if self.ema is not None:
            ema_x = x.contiguous(memory_format=torch.channels_last) if self.use_channels_last else x
            self.val_acc_ema(self.ema.module(ema_x), y)
            self.log(
                "val/acc_top1_ema", self.val_acc_ema, on_step=False, on_epoch=True, batch_size=n
            )


def _smoothed_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing, as timm's `mixup_target` builds them at lam=1."""
    off = smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, device=y.device)
    return out.scatter_(1, y.view(-1, 1), 1.0 - smoothing + off)
