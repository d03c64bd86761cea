"""Temperature scaling (Guo et al., 2017): one scalar T > 0 that divides the logits.

Dividing every logit by the same T keeps the ranking of classes (accuracy, top-5, the
confusion matrix do not change) and only sharpens (T < 1) or softens (T > 1) the probabilities.
T is fitted on the validation split by minimising the negative log-likelihood, never on test.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from food_assets.ml.errors import ConfigError

#: Search range for T. Outside it the model is degenerate (or the logits are not logits).
T_MIN, T_MAX = 0.05, 20.0


def fit_temperature(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    *,
    bounds: tuple[float, float] = (T_MIN, T_MAX),
) -> float:
    """The temperature that minimises the validation negative log-likelihood.

    The search is a bounded scalar minimisation (Brent) over log T: NLL(T) is smooth in log T
    and the log keeps the step sizes sensible at both ends of the range. It is deterministic.

    Args:
        val_logits: `(N, C)` raw logits on the validation split.
        val_labels: `(N,)` true class indices.
        bounds: the range searched for T.

    Returns:
        T, a positive float (1.0 would mean the model was already calibrated in NLL).

    Raises:
        ConfigError: empty or non-finite logits, labels out of range, bad bounds.
    """
    logits = np.asarray(val_logits, dtype=np.float64)
    labels = np.asarray(val_labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ConfigError(
            f"fit_temperature needs non-empty (N, C) validation logits; got shape {logits.shape}"
        )
    if labels.shape != (logits.shape[0],):
        raise ConfigError(f"{logits.shape[0]} logit rows but labels have shape {labels.shape}")
    if not np.all(np.isfinite(logits)):
        raise ConfigError("validation logits contain NaN or inf; cannot fit a temperature")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ConfigError(f"validation labels out of range for {logits.shape[1]} classes")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ConfigError(f"temperature bounds must satisfy 0 < low < high; got {bounds}")
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        logp = log_softmax(logits / math.exp(log_t), axis=1)
        return float(-logp[rows, labels].mean())

    result = minimize_scalar(
        nll, bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": 1e-6}
    )
    return float(math.exp(result.x))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """`logits / temperature`, in the input's float dtype.

    Raises:
        ConfigError: a temperature that is not a positive finite number.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a positive finite number, got {temperature}")
    logits = np.asarray(logits)
    dtype = logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float64
    return (logits / np.asarray(temperature, dtype=dtype)).astype(dtype, copy=False)
