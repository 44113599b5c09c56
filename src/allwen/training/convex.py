"""Fit a linear head on frozen features to its optimum: L-BFGS, L2 strength chosen on validation.

A linear head on fixed features is a (class-weighted) logistic regression: a convex problem
with one optimum per L2 strength. Epochs of Adam with early stopping stop somewhere short of
it, which is why a plain scikit-learn logistic regression on the same features beat allwen's
trained heads. Here each strength of a small grid is solved by full-batch L-BFGS (scipy's
L-BFGS-B, what scikit-learn uses) to the optimum, warm-started from the previous strength, and
the strength whose head scores best on the validation fold wins (ties: the stronger penalty).
The result is written into the same ``nn.Linear`` the model already has, so stage 2 starts
from it unchanged.

The head is the optimum itself, not wherever a solve happened to stop: float64 throughout,
features centred on the training mean (the same model and penalty, the bias absorbs the mean;
the solve needs 5-8x fewer iterations), stopped when no gradient entry exceeds
:data:`GRAD_TOL`. The optimum is a smooth function of the features, so features that differ
by 1e-5 (PyTorch vs ONNX Runtime, ``train.frozen_runtime``) give heads, validation scores and
probabilities that differ by about 1e-5 too; a float32 solve stopped 1e-3 to 0.1 apart and
could flip the chosen strength.

The objective, for weights ``W`` (bias not penalised) and class weights ``c``:
``sum_i c_{y_i} l_i / sum_i c_{y_i} + (strength / 2) * ||W||^2``, with ``l_i`` the cross-entropy
(softmax heads) or binary cross-entropy on the positive class (the sigmoid head), i.e. exactly
the loss :meth:`allwen.models.heads.ClassifierModel.loss` trains with, plus the penalty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits
from torch import nn

from allwen.models.heads import ClassifierModel

log = logging.getLogger(__name__)

DEFAULT_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)
GRAD_TOL = 1e-10  # the largest |gradient| entry at the optimum the solve stops at
MAX_ITER = 15000
LINEAR_HEADS = ("sigmoid", "softmax")


@dataclass
class ConvexFit:
    """What the solver chose and why (recorded in the unit's history)."""

    strength: float
    val_score: float
    objective: float
    scores: dict[float, float] = field(default_factory=dict)
    iterations: dict[float, int] = field(default_factory=dict)


def linear_layer(model: ClassifierModel) -> nn.Linear:
    """The head's one linear layer; other heads are not convex in their parameters."""
    if model.head_name not in LINEAR_HEADS:
        raise ValueError(
            f"train.stage1.solver=lbfgs needs a linear head ({', '.join(LINEAR_HEADS)}), not "
            f"{model.head_name!r}; use solver adam for hidden-layer heads"
        )
    layers = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    if len(layers) != 1:
        raise ValueError(f"head {model.head_name!r} has {len(layers)} linear layers, expected 1")
    return layers[0]


def objective(model: ClassifierModel, features: torch.Tensor, labels: torch.Tensor,
              class_weights: torch.Tensor | None, strength: float) -> torch.Tensor:
    """The regularised training loss the solver minimises (dropout off: the head is evaluated)."""
    layer = linear_layer(model)
    return _objective(model, layer.weight, layer.bias, features, labels, class_weights, strength)


def _objective(model: ClassifierModel, weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor,
               labels: torch.Tensor, class_weights: torch.Tensor | None, strength: float) -> torch.Tensor:
    logits = torch.nn.functional.linear(features, weight, bias)
    return model.loss(logits, labels, class_weights) + 0.5 * strength * weight.pow(2).sum()


def _solve(model: ClassifierModel, theta: np.ndarray, shape: tuple[int, int], features: torch.Tensor,
           labels: torch.Tensor, class_weights: torch.Tensor | None, strength: float, max_iter: int,
           tol: float) -> tuple[np.ndarray, int, float]:
    """scipy's L-BFGS-B in float64 from ``theta`` (weights then bias, flat) until the largest
    gradient entry is below ``tol``: (solution, iterations, largest gradient entry left)."""
    k, d = shape

    def value_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(flat).requires_grad_(True)
        loss = _objective(model, t[:k * d].view(k, d), t[k * d:], features, labels, class_weights, strength)
        loss.backward()
        return float(loss.detach()), t.grad.numpy().copy()

    with threadpool_limits(1, user_api="blas"):  # its small vector updates: BLAS threads only spin (10x slower)
        result = minimize(value_and_grad, theta, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "maxfun": 2 * max_iter, "gtol": tol, "ftol": 0.0, "maxcor": 20})
    return result.x, int(result.nit), float(np.abs(result.jac).max())


def fit_linear_head(model: ClassifierModel, train_features: torch.Tensor, train_labels: torch.Tensor,
                    val_features: torch.Tensor, val_labels: torch.Tensor, class_weights: np.ndarray | None,
                    score, strengths: tuple[float, ...] = DEFAULT_STRENGTHS, max_iter: int = MAX_ITER,
                    tol: float = GRAD_TOL) -> ConvexFit:
    """Solve the head for every strength (strongest first, warm starts) and keep the best on validation.

    ``score(y_val, proba_val) -> float`` is the monitored validation metric, higher is better;
    ties go to the stronger penalty (the simpler model). Each solve runs to a largest gradient
    entry of ``tol`` (a warning when ``max_iter`` iterations did not get there).
    """
    if not strengths:
        raise ValueError("train.stage1.l2: give at least one regularisation strength")
    layer = linear_layer(model)
    shape = tuple(layer.weight.shape)
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float64)
    x, y = train_features.to(torch.float64), train_labels.long()
    centre = x.mean(0)  # logits W (x - centre) + b': the same model and penalty, far better conditioned
    x, xv = x - centre, val_features.to(torch.float64) - centre
    theta = np.zeros(shape[0] * shape[1] + shape[0])
    best: tuple[float, float, np.ndarray] | None = None
    scores: dict[float, float] = {}
    iterations: dict[float, int] = {}
    for strength in sorted(strengths, reverse=True):  # strong to weak: each warm-starts the next
        theta, iterations[strength], left = _solve(model, theta, shape, x, y, weights, strength, max_iter, tol)
        if left > 100 * tol:
            log.warning("lbfgs head: L2 %g stopped after %d iterations with gradient %.1e (asked %.0e)",
                        strength, iterations[strength], left, tol)
        weight, bias = _unflat(theta, shape)
        with torch.no_grad():
            proba = model.probabilities(torch.nn.functional.linear(xv, weight, bias)).numpy()
        scores[strength] = float(score(val_labels.numpy(), proba))
        if best is None or scores[strength] > best[1]:
            best = (strength, scores[strength], theta.copy())
    strength, val_score, theta = best
    weight, bias = _unflat(theta, shape)
    with torch.no_grad():
        value = float(_objective(model, weight, bias, x, y, weights, strength))
        layer.weight.copy_(weight.to(layer.weight.dtype))
        layer.bias.copy_((bias - weight @ centre).to(layer.bias.dtype))  # back to uncentred features
    log.info("lbfgs head: L2 %.0e chosen on validation (%s), objective %.8f",
             strength, ", ".join(f"{k:.0e}: {v:.4f}" for k, v in sorted(scores.items())), value)
    return ConvexFit(strength, val_score, value, scores, iterations)


def _unflat(theta: np.ndarray, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    k, d = shape
    return torch.from_numpy(theta[:k * d].reshape(k, d).copy()), torch.from_numpy(theta[k * d:].copy())
