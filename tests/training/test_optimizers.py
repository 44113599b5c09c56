"""train.optimizer_defaults: Keras's constants for the studies that ran on Keras; momentum for sgd."""

from __future__ import annotations

import pytest
import torch

from allwen.config.schema import TrainConfig
from allwen.training.task import build_optimizer


def _group(**train: object) -> dict:
    params = [torch.nn.Parameter(torch.zeros(3))]
    return build_optimizer(params, TrainConfig(**train)).param_groups[0]


def test_keras_rmsprop_and_adam_constants():
    rms = _group(optimizer="rmsprop", optimizer_defaults="keras", lr=1e-4)
    assert (rms["alpha"], rms["eps"], rms["lr"]) == (0.9, 1e-7, 1e-4)
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
