"""SeLU6 and the expansion-activation swap of Experiment D.

Experiment D replaces the activation right after each block's expansion convolution with a
self-normalising one capped at 6 (the ReLU6 idea applied to SELU), leaving every other
activation (depthwise, squeeze-excite, stem, head) as the pretrained network had it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models._efficientnet_blocks import EdgeResidual, InvertedResidual
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
    """Replace the activation after every expansion convolution; return how many were swapped.

    In timm's EfficientNet/EfficientNetV2/MobileNet blocks the expansion is followed by a
    norm-act layer ``bn1`` whose ``act`` is the activation: ``InvertedResidual`` (MBConv,
    ``conv_pw`` -> ``bn1``; ``CondConvResidual`` is a subclass) and ``EdgeResidual``
    (fused-MBConv, ``conv_exp`` -> ``bn1``). ``DepthwiseSeparableConv`` blocks have no
    expansion and are left alone. Each swap gets its own ``factory()`` instance so that a
    stateful activation is never shared between blocks. Do this before freezing: the frozen
    norm layer keeps whatever ``act`` it was given.
    """
    count = 0
    for name, module in backbone.named_modules():
        if not isinstance(module, (InvertedResidual, EdgeResidual)):
            continue
        norm = getattr(module, "bn1", None)
        if norm is None or not hasattr(norm, "act"):
            logger.debug("block %s has no norm-act after its expansion conv; left as is", name)
            continue
        norm.act = factory()
        count += 1
    if count == 0:
        raise ValueError(
            f"{type(backbone).__name__} has no InvertedResidual/EdgeResidual blocks with an "
            "expansion activation to swap; activation: selu6 needs an EfficientNet, "
            "EfficientNetV2 or MobileNet backbone (use activation: native otherwise)"
        )
    logger.debug(
        "swapped %d expansion activations for %s", count, getattr(factory, "__name__", factory)
    )
    return count
