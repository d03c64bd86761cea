"""The decisions behind the asset checks, as pure functions: a frame or figures in, a
`CheckOutcome` out.

The Dagster checks in `food_assets/defs/assets/` are thin wrappers that turn an outcome into an
`AssetCheckResult`, so every decision can be tested on bad input here, where no real run could
produce it (`make_splits` never writes a leaky split; the checks guard against it doing so after
a change). No Dagster and no MLflow in this module (import-linter contract).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from food_assets.ml.data.splits import SPLITS

#: How many offending names a description lists before it stops.
MAX_LISTED = 20
#: How many example paths go into a check's metadata.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CheckOutcome:
    """What a check decided.

    Attributes:
        passed: the condition holds.
        description: one line for the UI, with the figures the decision used.
        metadata: numbers and short strings for the check's metadata.
    """

    passed: bool
    description: str
    metadata: dict[str, int | float | str] = field(default_factory=dict)


def check_every_class_in_every_split(
    frame: pd.DataFrame, class_names: Sequence[str], splits: Sequence[str] = SPLITS
) -> CheckOutcome:
    """Every class of the class map has at least one image in every split.

    Args:
        frame: the split manifest (`label` and `split` columns).
        class_names: the class map the models are trained on.
        splits: the splits that must each hold every class.
    """
    missing = [
        f"{c} (no {s})"
        for s in splits
        for c in sorted(set(class_names) - set(frame.loc[frame["split"] == s, "label"]))
    ]
    return CheckOutcome(
        passed=not missing,
        description="all classes present"
        if not missing
        else "missing: " + ", ".join(missing[:MAX_LISTED]),
        metadata={"missing": len(missing)},
    )


def check_no_image_in_two_splits(frame: pd.DataFrame) -> CheckOutcome:
    """No file (`path`) appears in more than one split."""
    per_path = frame.groupby("path")["split"].nunique()
    bad = sorted(per_path[per_path > 1].index)
    return CheckOutcome(
        passed=not bad,
        description=f"{len(bad)} image(s) in more than one split",
        metadata={
            "images_in_two_splits": len(bad),
            "examples": ", ".join(bad[:MAX_EXAMPLES]) or "none",
        },
    )


def check_no_content_leak(frame: pd.DataFrame) -> CheckOutcome:
    """No test image has the same content (`sha256`) as a train or val image, whatever its path:
    a copy of a training photo under another name would inflate test accuracy."""
    seen = set(frame.loc[frame["split"].isin(["train", "val"]), "sha256"])
    leaked = frame[(frame["split"] == "test") & frame["sha256"].isin(seen)]
    examples = sorted(leaked["path"])[:MAX_EXAMPLES]
    return CheckOutcome(
        passed=leaked.empty,
        description=f"{len(leaked)} test image(s) identical to a train/val image",
        metadata={"leaked": len(leaked), "examples": ", ".join(examples) or "none"},
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def check_gradcam_sanity(metrics: Mapping[str, float]) -> CheckOutcome:
    """Do the CAMs follow the object? (figures from `build_gradcam_report`)

    Where object boxes are known (the sample source), the pointing game must beat its random
    baseline; otherwise removing the top-CAM region must lower the predicted class's
    probability more than removing a random region of the same shape. A tie fails: CAMs that
    ignore the image (constant maps) score no better than chance. With neither figure the check
    has evaluated nothing, and says so.
    """
    point = metrics.get("gradcam/pointing_game")
    base = metrics.get("gradcam/pointing_random_expected")
    if _finite(point) and _finite(base):
        return CheckOutcome(
            passed=bool(point > base),
            description=f"pointing game {point:.2f} vs random {base:.2f}",
        )
    cam = metrics.get("gradcam/deletion_cam_drop")
    rnd = metrics.get("gradcam/deletion_random_drop")
    if _finite(cam) and _finite(rnd):
        return CheckOutcome(
            passed=bool(cam > rnd),
            description=f"deletion drop {cam:.3f} (CAM region) vs {rnd:.3f} (random region)",
        )
    return CheckOutcome(
        passed=False, description="not evaluated: no sanity figure could be computed"
    )


def check_int8_gate(
    fp32_pred: Sequence[int] | np.ndarray,
    int8_pred: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    min_agreement: float,
    max_drop_points: float,
    variant: str = "int8",
) -> CheckOutcome:
    """May the int8 export (or another `variant`, e.g. `openvino/bf16`) stand in for the fp32
    one? Top-1 predictions of both on the same test images, and the true labels.

    Passes when the share of images where both give the same top-1 class is at least
    `min_agreement` (e.g. 0.99) and int8's top-1 accuracy is at most `max_drop_points`
    percentage points (e.g. 0.5) below fp32's. No images: not evaluated, not a pass.
    """
    fp32_pred, int8_pred, labels = (np.asarray(a) for a in (fp32_pred, int8_pred, labels))
    n = len(labels)
    if not (len(fp32_pred) == len(int8_pred) == n):
        raise ValueError(
            f"check_int8_gate: {len(fp32_pred)} fp32, {len(int8_pred)} int8 predictions and "
            f"{n} labels"
        )
    thresholds = {"min_agreement": float(min_agreement), "max_drop_points": float(max_drop_points)}
    if n == 0:
        return CheckOutcome(
            passed=False, description="not evaluated: no test images", metadata={"n_images": 0}
        )
    agreement = float((fp32_pred == int8_pred).mean())
    acc_fp32 = float((fp32_pred == labels).mean())
    acc_int8 = float((int8_pred == labels).mean())
    drop = 100.0 * (acc_fp32 - acc_int8)
    # A tolerance for float rounding: 0.5 points measured as 0.5000000001 is still 0.5.
    passed = agreement >= min_agreement - 1e-12 and drop <= max_drop_points + 1e-9
    return CheckOutcome(
        passed=bool(passed),
        description=f"top-1 agreement {agreement:.2%} (min {min_agreement:.2%}), accuracy "
        f"{acc_int8:.2%} {variant} vs {acc_fp32:.2%} fp32 (drop {drop:+.2f} points, max "
        f"{max_drop_points:g}) on {n} test images",
        metadata={
            "top1_agreement": agreement,
            "acc_top1_fp32": acc_fp32,
            "acc_top1_int8" if variant == "int8" else "acc_top1_variant": acc_int8,
            "drop_points": drop,
            "n_images": n,
            **thresholds,
        },
    )
