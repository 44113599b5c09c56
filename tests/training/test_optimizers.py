"""train.optimizer_defaults: Keras's RMSprop and Adam arithmetic for the studies that ran on Keras
(against the formulas, step by step, and against worked examples); momentum for sgd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allwen.config.schema import TrainConfig
from allwen.training.keras_optimizers import KerasAdam, KerasRMSprop
from allwen.training.task import build_optimizer, build_scheduler


def _group(**train: object) -> dict:
    params = [torch.nn.Parameter(torch.zeros(3))]
    return build_optimizer(params, TrainConfig(**train)).param_groups[0]


def test_keras_rmsprop_and_adam_constants():
    rms = _group(optimizer="rmsprop", optimizer_defaults="keras", lr=1e-4)
    assert (rms["rho"], rms["eps"], rms["lr"]) == (0.9, 1e-7, 1e-4)
    adam = _group(optimizer="adam", optimizer_defaults="keras")
    assert adam["eps"] == 1e-7 and adam["betas"] == (0.9, 0.999)
    assert _group(optimizer="adamw", optimizer_defaults="keras")["eps"] == 1e-7


def test_torch_constants_stay_the_default():
    assert TrainConfig().optimizer_defaults == "torch"
    rms = _group(optimizer="rmsprop")
    assert (rms["alpha"], rms["eps"]) == (0.99, 1e-8)
    assert _group(optimizer="adam")["eps"] == 1e-8


@pytest.mark.parametrize("defaults", ["torch", "keras"])
def test_sgd_momentum_zero_is_the_plain_gradient_step(defaults):
    """Experiment D's Eq. 13, w <- w - lr * grad: one step moves w by exactly -lr * grad."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer([w], TrainConfig(optimizer="sgd", momentum=0.0, lr=0.1, optimizer_defaults=defaults))
    for _ in range(2):  # momentum would make the second step larger
        before = w.detach().clone()
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
        assert torch.allclose(w.detach(), before - 0.1 * 2 * before)
    assert _group(optimizer="sgd")["momentum"] == 0.9


def _opt(**train: object) -> tuple[torch.optim.Optimizer, torch.nn.Parameter]:
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    return build_optimizer([w], TrainConfig(**train)), w


def _step(opt: torch.optim.Optimizer, w: torch.nn.Parameter, grad: float | np.ndarray) -> None:
    opt.zero_grad()
    w.grad = torch.as_tensor(np.broadcast_to(grad, w.shape).copy(), dtype=w.dtype)
    opt.step()


def test_keras_optimizers_are_built_for_keras_only():
    assert type(_opt(optimizer="rmsprop", optimizer_defaults="keras")[0]) is KerasRMSprop
    assert type(_opt(optimizer="adam", optimizer_defaults="keras")[0]) is KerasAdam
    assert type(_opt(optimizer="adamw", optimizer_defaults="keras")[0]) is KerasAdam
    assert type(_opt(optimizer="rmsprop")[0]) is torch.optim.RMSprop
    assert type(_opt(optimizer="adam")[0]) is torch.optim.Adam


def test_keras_rmsprop_worked_example():
    """Worked by hand: w = 1, g = 0.5, lr 0.1, rho 0.9, eps 1e-7.
    v1 = 0.1 * 0.5^2 = 0.025; step = 0.1 * 0.5 / sqrt(0.0250001) = 0.05 / 0.15811420 = 0.3162271
    -> w1 = 0.6837729. v2 = 0.9 * 0.025 + 0.025 = 0.0475; step = 0.05 / sqrt(0.0475001) = 0.2294155."""
    opt, w = _opt(optimizer="rmsprop", optimizer_defaults="keras", lr=0.1)
    _step(opt, w, 0.5)
    assert w.item() == pytest.approx(0.6837729, abs=1e-7)
    _step(opt, w, 0.5)
    assert w.item() == pytest.approx(0.6837729 - 0.2294155, abs=1e-7)


def test_keras_rmsprop_eps_inside_the_root_makes_tiny_gradients_take_tiny_steps():
    """g = 1e-6: Keras steps lr * 1e-6 / sqrt(1e-13 + 1e-7) = lr * 3.16e-3; PyTorch with the same
    constants steps lr * 1e-6 / (3.16e-7 + 1e-7) = lr * 2.40, about 760 times more."""
    keras, wk = _opt(optimizer="rmsprop", optimizer_defaults="keras", lr=0.1)
    _step(keras, wk, 1e-6)
    assert 1.0 - wk.item() == pytest.approx(0.1 * 3.1623e-3, rel=1e-4)
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    torch_rms = torch.optim.RMSprop([w], lr=0.1, alpha=0.9, eps=1e-7)
    _step(torch_rms, w, 1e-6)
    assert (1.0 - w.item()) / (1.0 - wk.item()) == pytest.approx(759.9, rel=1e-3)


def test_keras_adam_worked_example():
    """Worked by hand: w = 1, g = 0.5, lr 0.1, b1 0.9, b2 0.999, eps 1e-7. m1 = 0.05,
    v1 = 0.00025, sqrt(v1) = 0.0158114; step size lr * sqrt(1 - 0.999) / (1 - 0.9) = 0.0316228;
    step = 0.0316228 * 0.05 / (0.0158114 + 1e-7) = 0.09999937 -> w1 = 0.90000063. (PyTorch's
    Adam: 0.1 * 0.5 / (0.5 + 1e-7) = 0.09999998.) With g = 1e-7 the two differ plainly: Keras
    0.1 * 0.0316228 * 1e-8 / (3.162e-9 + 1e-7) = 0.0030655, PyTorch 0.1 * 1e-7 / 2e-7 = 0.05."""
    opt, w = _opt(optimizer="adam", optimizer_defaults="keras", lr=0.1)
    _step(opt, w, 0.5)
    assert w.item() == pytest.approx(0.90000063, abs=1e-8)
    opt, w = _opt(optimizer="adam", optimizer_defaults="keras", lr=0.1)
    _step(opt, w, 1e-7)
    assert 1.0 - w.item() == pytest.approx(0.0030655, rel=1e-4)
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    _step(torch.optim.Adam([w], lr=0.1, eps=1e-7), w, 1e-7)  # the same constants, PyTorch's formula
    assert 1.0 - w.item() == pytest.approx(0.05, rel=1e-6)


def _grads(steps: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    # gradients over five orders of magnitude: where eps's place matters
    return rng.normal(size=(steps, size)) * 10.0 ** rng.integers(-7, -1, size=(steps, size))


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_keras_rmsprop_follows_the_formula_step_by_step(weight_decay):
    lr, rho, eps = 1e-3, 0.9, 1e-7
    grads = _grads(6, 5)
    w0 = np.linspace(-1, 1, 5)
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = build_optimizer([w], TrainConfig(optimizer="rmsprop", optimizer_defaults="keras", lr=lr,
                                           weight_decay=weight_decay))
    ref, v = w0.copy(), np.zeros(5)
    for g in grads:
        _step(opt, w, g)
        ref = ref - lr * weight_decay * ref
        v = rho * v + (1 - rho) * g ** 2
        ref = ref - lr * g / np.sqrt(v + eps)
        np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_keras_adam_follows_the_formula_step_by_step(optimizer):
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    grads = _grads(6, 5)
    w0 = np.linspace(-1, 1, 5)
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = build_optimizer([w], TrainConfig(optimizer=optimizer, optimizer_defaults="keras", lr=lr))
    ref, m, v = w0.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, 1):
        _step(opt, w, g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        ref = ref - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_exponential_decay_drives_the_keras_optimizers(optimizer):
    """Experiment C's schedule (lr 1e-4, 0.95 per 900 steps) on Keras's RMSprop: the scheduler sets
    the group's lr and the next step uses it."""
    cfg = TrainConfig(optimizer=optimizer, optimizer_defaults="keras", lr=1e-4, schedule="exponential",
                      decay_steps=900, decay_rate=0.95)
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = build_optimizer([w], cfg)
    scheduler = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=5)
    for _ in range(900):
        opt.step()  # no gradient: nothing moves, only the schedule advances
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.95)
    assert w.item() == 1.0
    if optimizer == "rmsprop":
        _step(opt, w, 0.5)  # first step: lr * g / sqrt((1 - rho) g^2 + eps)
        assert 1.0 - w.item() == pytest.approx(0.95e-4 * 0.5 / np.sqrt(0.025 + 1e-7), rel=1e-9)
