"""Temperature scaling: one number that makes predicted probabilities honest.

A network's probabilities are often over- (or under-) confident. Temperature scaling
(Guo et al., 2017) divides the logits by a single T > 0 fitted by minimising the negative
log-likelihood on held-out predictions; the predicted class never changes, only how sure the
model says it is. Runs save probabilities, not logits, so the log-probabilities stand in for
the logits: ``softmax(log p / T)`` equals ``softmax(z / T)`` for softmax heads and
``sigmoid(z / T)`` for the one-logit sigmoid head, exactly.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar

from allwen.evaluation.metrics import predict_labels

log = logging.getLogger(__name__)

_EPS = 1e-12
T_RANGE = (0.01, 100.0)


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1.0))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by ``temperature`` (1 = unchanged); rows still sum to 1."""
    if temperature == 1.0:
        return np.asarray(proba, dtype=np.float64)
    z = _log(proba) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    y = np.asarray(y, dtype=np.int64)
    return float(-_log(proba)[np.arange(len(y)), y].mean())


def ece(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence, equal-width bins (Guo et al.)."""
    proba = np.asarray(proba, dtype=np.float64)
    conf, correct = proba.max(axis=1), (predict_labels(proba) == np.asarray(y)).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.mean() * abs(conf[mask].mean() - correct[mask].mean())
    return float(total)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The T in ``T_RANGE`` minimising the NLL of ``y`` under ``apply_temperature(proba, T)``.

    One parameter, so a bounded scalar search on log T is exact enough and never diverges.
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("temperature scaling needs at least one labelled prediction")
    result = minimize_scalar(
        lambda log_t: nll(apply_temperature(proba, float(np.exp(log_t))), y),
        bounds=tuple(np.log(T_RANGE)), method="bounded", options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
