"""SeLU6 and the activation swaps of Experiment D.

Experiment D replaces the activation right after the expansion convolution of each MBConv
block with a self-normalising one capped at 6 (the paper's Eq. 1, the ReLU6 idea applied to
SELU). ``activation: selu6`` swaps only that one and keeps the pretrained network's SiLU
everywhere else. ``activation: selu6_paper`` also writes the paper's other equations:
ReLU6 after the depthwise convolution (Eq. 2), ReLU inside squeeze-excitation (Eq. 4) and
max(0, x) in the Fused-MBConv blocks (Eq. 7); stem and head convolutions keep theirs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    SqueezeExcite,
)
from torch import nn

logger = logging.getLogger(__name__)


class SeLU6(nn.Module):
    """``min(6, selu(x))``: SELU's self-normalising negative side with ReLU6's bounded top.

    The cap keeps activations in the range low-precision inference and the pretrained
    following layers were tuned for (MobileNet-style networks use ReLU6 for the same reason).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(F.selu(x), max=6.0)


def swap_expansion_activation(
    backbone: nn.Module, factory: Callable[[], nn.Module] = SeLU6
) -> int:
    """Replace the activation after every MBConv expansion convolution; return how many.

    In timm's EfficientNet/EfficientNetV2/MobileNet MBConv blocks (``InvertedResidual``;
    ``CondConvResidual`` is a subclass) the expansion ``conv_pw`` is followed by the norm-act
    layer ``bn1`` whose ``act`` is the activation; the depthwise step's is ``bn2.act`` and
    stays. Fused-MBConv blocks (``EdgeResidual``) keep theirs, as in the paper, and
    ``DepthwiseSeparableConv`` blocks have no expansion. Each swap gets its own ``factory()`` instance so that a
    stateful activation is never shared between blocks. Do this before freezing: the frozen
    norm layer keeps whatever ``act`` it was given.
    """
    count = 0
    for name, module in backbone.named_modules():
        if not isinstance(module, InvertedResidual):
            continue
        norm = getattr(module, "bn1", None)
        if norm is None or not hasattr(norm, "act"):
            logger.debug("block %s has no norm-act after its expansion conv; left as is", name)
            continue
        norm.act = factory()
        count += 1
    if count == 0:
        raise ValueError(
            f"{type(backbone).__name__} has no MBConv (InvertedResidual) blocks with an "
            "expansion activation to swap; activation: selu6 needs an EfficientNet, "
            "EfficientNetV2 or MobileNet backbone (use activation: native otherwise)"
        )
    logger.debug(
        "swapped %d expansion activations for %s", count, getattr(factory, "__name__", factory)
    )
    return count


#: ``selu6_paper``: the activation each kind of place gets, and the paper's equation for it.
PAPER_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "expansion": (SeLU6, "Eq. 1"),
    "depthwise": (lambda: nn.ReLU6(inplace=True), "Eq. 2"),
    "squeeze_excite": (lambda: nn.ReLU(inplace=True), "Eq. 4"),
    "fused": (lambda: nn.ReLU(inplace=True), "Eq. 7"),
}


def _set_act(norm: nn.Module | None, kind: str, counts: Counter) -> None:
    if norm is None or not hasattr(norm, "act") or isinstance(norm.act, nn.Identity):
        return  # no activation there (a projection's norm): nothing to write
    norm.act = PAPER_ACTIVATIONS[kind][0]()
    counts[kind] += 1


def swap_paper_activations(backbone: nn.Module) -> dict[str, int]:
    """Experiment D's Eqs. 1, 2, 4 and 7 in a timm EfficientNet-family backbone; the number of
    activations set per kind (``expansion``, ``depthwise``, ``squeeze_excite``, ``fused``).

    MBConv (``InvertedResidual``): SeLU6 after the expansion (``bn1``), ReLU6 after the
    depthwise convolution (``bn2``); ``DepthwiseSeparableConv`` (no expansion): ReLU6 after its
    depthwise convolution; every squeeze-excitation's reduction activation (``act1``): ReLU;
    Fused-MBConv (``EdgeResidual``, and ``ConvBnAct``, EfficientNetV2's expansion-1 Fused-MBConv
    stage): ReLU after the fused convolution. Do this before freezing, like the SeLU6 swap.
    """
    counts: Counter = Counter()
    for module in backbone.modules():
        if isinstance(module, InvertedResidual):
            _set_act(getattr(module, "bn1", None), "expansion", counts)
            _set_act(getattr(module, "bn2", None), "depthwise", counts)
        elif isinstance(module, DepthwiseSeparableConv):
            _set_act(getattr(module, "bn1", None), "depthwise", counts)
        elif isinstance(module, (EdgeResidual, ConvBnAct)):
            _set_act(getattr(module, "bn1", None), "fused", counts)
        elif isinstance(module, SqueezeExcite) and hasattr(module, "act1"):
            module.act1 = PAPER_ACTIVATIONS["squeeze_excite"][0]()
            counts["squeeze_excite"] += 1
    if not counts["expansion"]:
        raise ValueError(
            f"{type(backbone).__name__} has no MBConv (InvertedResidual) blocks; activation: selu6_paper needs an "
            "EfficientNet, EfficientNetV2 or MobileNet backbone (use activation: native otherwise)"
        )
    logger.debug("selu6_paper activations: %s", dict(counts))
    return {kind: counts[kind] for kind in PAPER_ACTIVATIONS}


def apply_activation(backbone: nn.Module, activation: str) -> dict[str, int]:
    """``model.activation`` on a freshly built backbone; the swaps made per kind."""
    if activation == "native":
        return {}
    if activation == "selu6":
        return {"expansion": swap_expansion_activation(backbone)}
    if activation == "selu6_paper":
        return swap_paper_activations(backbone)
    raise ValueError(f"model.activation={activation!r}: choose from native, selu6, selu6_paper")
