"""Keras's RMSprop and Adam arithmetic as torch optimizers (``train.optimizer_defaults: keras``).

The five studies trained with Keras. Its constants differ from PyTorch's, and so do two formulas:

- **RMSprop** (Keras 2 and 3, TensorFlow's ``ApplyRMSProp``): ``v = rho * v + (1 - rho) * g^2``,
  ``w -= lr * g / sqrt(v + eps)``; PyTorch divides by ``sqrt(v) + eps``. With eps 1e-7 the Keras
  denominator never falls below about 3.2e-4, so weights with tiny gradients take far smaller
  steps than in PyTorch with the same constants.
- **Adam** (Keras 2 and 3): ``m = b1 * m + (1 - b1) * g``, ``v = b2 * v + (1 - b2) * g^2``,
  ``w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``: eps is added to the
  *uncorrected* ``sqrt(v)`` (the paper's "epsilon hat"), where PyTorch adds it after the bias
  correction; the two agree up to eps's effective size, ``eps / sqrt(1 - b2^t)`` in PyTorch's terms.

Weight decay, when set, is Keras 3's: decoupled, ``w -= lr * weight_decay * w`` before the step
(Keras 2's optimizers had none). No momentum, no centring, no amsgrad: what Keras's defaults are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class KerasRMSprop(torch.optim.Optimizer):
    """Keras's RMSprop: ``w -= lr * g / sqrt(v + eps)`` with ``v`` the decayed mean of ``g^2``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, rho: float = 0.9,
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0.0 <= rho < 1.0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"KerasRMSprop: lr {lr} > 0, rho {rho} in [0, 1), eps {eps} >= 0, "
                             f"weight_decay {weight_decay} >= 0 needed")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps, wd = group["lr"], group["rho"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if wd:
                    p.mul_(1 - lr * wd)
                g = p.grad
                v = state["velocity"]
                v.mul_(rho).addcmul_(g, g, value=1 - rho)
                p.addcdiv_(g, (v + eps).sqrt_(), value=-lr)
        return loss


class KerasAdam(torch.optim.Optimizer):
    """Keras's Adam: eps added to the uncorrected ``sqrt(v)``, the bias correction on the step size."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        if lr <= 0 or not all(0.0 <= b < 1.0 for b in betas) or eps < 0 or weight_decay < 0:
            raise ValueError(f"KerasAdam: lr {lr} > 0, betas {betas} in [0, 1), eps {eps} >= 0, "
                             f"weight_decay {weight_decay} >= 0 needed")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                if wd:
                    p.mul_(1 - lr * wd)
                g = p.grad
                m, v = state["m"], state["v"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-alpha)
        return loss
