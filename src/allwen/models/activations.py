"""SeLU6 and the expansion-activation swap of Experiment D.

Experiment D replaces the activation right after the expansion convolution of each MBConv
block with a self-normalising one capped at 6 (the paper's Eq. 1, the ReLU6 idea applied to
SELU). Everything else keeps the pretrained network's activation: the depthwise step (Eq. 2),
the Fused-MBConv blocks (Eq. 7), squeeze-excite, stem and head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models._efficientnet_blocks import InvertedResidual
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
