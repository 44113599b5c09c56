"""The L-BFGS head solver: the optimum of the regularised loss, as scikit-learn finds it, below Adam's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from allwen.models.heads import ClassifierModel, build_head
from allwen.training.convex import fit_linear_head, objective


def _data(k: int, n: int = 240, d: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.2, size=(k, d))
    y = rng.integers(0, k, size=n)
    x = centres[y] + rng.normal(0, 1.5, size=(n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _model(head: str, k: int, d: int = 24) -> ClassifierModel:
    torch.manual_seed(0)
    return ClassifierModel(torch.nn.Identity(), build_head(head, d, k), head, k)


def _accuracy(y, proba):
    return float(np.mean(proba.argmax(1) == y))


@pytest.mark.parametrize("head, k", [("softmax", 3), ("sigmoid", 2)])
def test_lbfgs_finds_scikit_learns_optimum(head, k):
    x, y = _data(k)
    model = _model(head, k)
    strength = 1e-2
    fit = fit_linear_head(model, x, y, x[:60], y[:60], None, _accuracy, strengths=(strength,))
    # scikit-learn minimises C * sum(loss) + ||W||^2 / 2, i.e. ours with strength = 1 / (C n)
    ref = LogisticRegression(C=1.0 / (strength * len(y)), tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    layer = model.head[1]
    if head == "softmax":  # the softmax is over-parameterised: compare centred logits' weights
        ours = layer.weight.detach().numpy()
        np.testing.assert_allclose(ours - ours.mean(0), ref.coef_ - ref.coef_.mean(0), atol=2e-3)
    else:
        np.testing.assert_allclose(layer.weight.detach().numpy(), ref.coef_, atol=2e-3)
        np.testing.assert_allclose(layer.bias.detach().numpy(), ref.intercept_, atol=2e-3)
    assert fit.strength == strength


def test_lbfgs_reaches_a_lower_regularised_loss_than_adam_on_the_same_features():
    x, y = _data(4, seed=1)
    weights = np.array([0.7, 1.0, 1.3, 1.1])
    lbfgs = _model("softmax", 4)
    fit = fit_linear_head(lbfgs, x, y, x[:80], y[:80], weights, _accuracy, strengths=(1e-3,))
    adam = _model("softmax", 4)
    optimizer = torch.optim.Adam(adam.head.parameters(), lr=1e-2)
    w = torch.tensor(weights, dtype=torch.float32)
    for _ in range(30):  # 30 epochs of mini-batches of 32, as a stage 1 would train
        for batch in torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).split(32):
            optimizer.zero_grad()
            objective(adam, x[batch], y[batch], w, 1e-3).backward()
            optimizer.step()
    with torch.no_grad():
        adam_value = float(objective(adam.eval(), x, y, w, 1e-3))
    assert fit.objective < adam_value - 1e-4, (fit.objective, adam_value)


def test_the_strength_is_chosen_on_validation_and_the_head_keeps_it():
    x, y = _data(3, n=120, d=60, seed=2)  # few samples, many features: weak L2 overfits
    xv, yv = _data(3, n=300, d=60, seed=2)
    model = _model("softmax", 3, d=60)
    fit = fit_linear_head(model, x, y, xv[120:], yv[120:], None, _accuracy, strengths=(1e-4, 1e-2, 1.0, 100.0))
    assert set(fit.scores) == {1e-4, 1e-2, 1.0, 100.0}
    assert fit.val_score == max(fit.scores.values())
    assert fit.scores[100.0] < fit.val_score  # the strongest penalty underfits
    with torch.no_grad():
        proba = model.probabilities(model.head_forward(xv[120:])).numpy()
    assert _accuracy(yv[120:].numpy(), proba) == pytest.approx(fit.val_score)


def test_hidden_layer_heads_are_refused():
    x, y = _data(3)
    with pytest.raises(ValueError, match="needs a linear head"):
        fit_linear_head(_model("mlp128", 3), x, y, x, y, None, _accuracy)


def test_features_that_differ_by_1e5_give_the_same_strength_and_probabilities_to_1e4():
    """What train.frozen_runtime needs: ONNX Runtime's features differ from PyTorch's by ~1e-5;
    the solved heads (weak L2 down to 1e-5, nearly separable classes) must not amplify that."""
    x, y = _data(4, n=400, d=96, seed=3)
    x = x.abs()  # non-negative, off-centre, like pooled ReLU features
    noisy = x + torch.empty_like(x).uniform_(-1e-5, 1e-5, generator=torch.Generator().manual_seed(1))
    weights = np.array([0.8, 1.2, 1.0, 1.1])
    grid = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    out = []
    for features in (x, noisy):
        model = _model("softmax", 4, d=96)
        fit = fit_linear_head(model, features[:240], y[:240], features[240:320], y[240:320], weights, _accuracy, grid)
        with torch.no_grad():
            out.append((fit, model.probabilities(model.head_forward(features[240:])).numpy()))
    (a, pa), (b, pb) = out
    assert a.strength == b.strength and a.scores == pytest.approx(b.scores, abs=0)
    assert 0 < np.abs(pa - pb).max() < 1e-4
    assert max(a.iterations.values()) < 15000  # converged, not stopped by the iteration cap
