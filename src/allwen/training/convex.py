"""Fit a linear head on frozen features to its optimum: L-BFGS, L2 strength chosen on validation.

A linear head on fixed features is a (class-weighted) logistic regression: a convex problem
with one optimum per L2 strength. Epochs of Adam with early stopping stop somewhere short of
it, which is why a plain scikit-learn logistic regression on the same features beat allwen's
trained heads. Here each strength of a small grid is solved by full-batch L-BFGS (strong
Wolfe line search) to convergence, warm-started from the previous strength, and the strength
whose head scores best on the validation fold wins. The result is written into the same
``nn.Linear`` the model already has, so stage 2 starts from it unchanged.

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
from torch import nn

from allwen.models.heads import ClassifierModel

log = logging.getLogger(__name__)

DEFAULT_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)
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
    logits = layer(features)
    return model.loss(logits, labels, class_weights) + 0.5 * strength * layer.weight.pow(2).sum()


def _solve(model: ClassifierModel, features: torch.Tensor, labels: torch.Tensor,
           class_weights: torch.Tensor | None, strength: float, max_iter: int, tol: float) -> int:
    layer = linear_layer(model)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=tol, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    calls = 0

    def closure() -> torch.Tensor:
        nonlocal calls
        calls += 1
        optimizer.zero_grad()
        loss = objective(model, features, labels, class_weights, strength)
        loss.backward()
        return loss

    optimizer.step(closure)
    return calls


def fit_linear_head(model: ClassifierModel, train_features: torch.Tensor, train_labels: torch.Tensor,
                    val_features: torch.Tensor, val_labels: torch.Tensor, class_weights: np.ndarray | None,
                    score, strengths: tuple[float, ...] = DEFAULT_STRENGTHS, max_iter: int = 500,
                    tol: float = 1e-7) -> ConvexFit:
    """Solve the head for every strength (strongest first, warm starts) and keep the best on validation.

    ``score(y_val, proba_val) -> float`` is the monitored validation metric, higher is better;
    ties go to the stronger penalty (the simpler model).
    """
    if not strengths:
        raise ValueError("train.stage1.l2: give at least one regularisation strength")
    layer = linear_layer(model)
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    x, y = train_features.float(), train_labels.long()
    xv = val_features.float()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    best: tuple[float, float, dict[str, torch.Tensor]] | None = None
    scores: dict[float, float] = {}
    iterations: dict[float, int] = {}
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        for strength in sorted(strengths, reverse=True):  # strong to weak: each warm-starts the next
            iterations[strength] = _solve(model, x, y, weights, strength, max_iter, tol)
            with torch.no_grad():
                proba = model.probabilities(layer(xv)).numpy().astype(np.float64)
            scores[strength] = float(score(val_labels.numpy(), proba))
            if best is None or scores[strength] > best[1]:
                best = (strength, scores[strength], {k: v.detach().clone() for k, v in layer.state_dict().items()})
    model.train(was_training)
    strength, val_score, state = best
    layer.load_state_dict(state)
    with torch.no_grad():
        value = float(objective(model, x, y, weights, strength))
    log.info("lbfgs head: L2 %.0e chosen on validation (%s), objective %.5f",
             strength, ", ".join(f"{k:.0e}: {v:.4f}" for k, v in sorted(scores.items())), value)
    return ConvexFit(strength, val_score, value, scores, iterations)
