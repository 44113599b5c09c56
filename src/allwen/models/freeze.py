"""Freezing the backbone for stage 1 and unfreezing its top blocks for stage 2.

Frozen must mean *unchanged*: ``requires_grad = False`` alone is not enough, because a
BatchNorm layer in train mode still updates its running mean and variance on every batch
and the "frozen" features drift away from the pretrained ones. timm's
:func:`timm.utils.freeze` also converts BatchNorm into ``FrozenBatchNorm2d`` (buffers only,
no statistics updates), and :func:`timm.utils.unfreeze` converts back keeping the values.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

import timm.utils
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from allwen.models.heads import ClassifierModel

logger = logging.getLogger(__name__)

_STEM = ("conv_stem", "bn1")
_HEAD = ("conv_head", "bn2", "norm_head")
_MOMENTUM_ATTR = "_allwen_bn_momentum"
_DROP_PATH_ATTR = "_allwen_drop_path"


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _block_paths(backbone: nn.Module) -> list[tuple[str, list[str]]]:
    """Blocks as (name, submodule paths), ordered from input to output; see backbone_blocks."""
    children = OrderedDict(backbone.named_children())
    blocks = children.get("blocks")
    if "conv_stem" not in children or not isinstance(blocks, nn.Sequential):
        return [(n, [n]) for n, c in children.items() if _has_state(c)]
    out: list[tuple[str, list[str]]] = []
    stem = [n for n in _STEM if n in children and _has_state(children[n])]
    if stem:
        out.append(("stem", stem))
    for i, stage in enumerate(blocks):
        if isinstance(stage, nn.Sequential):
            out.extend((f"blocks.{i}.{j}", [f"blocks.{i}.{j}"]) for j in range(len(stage)))
        else:
            out.append((f"blocks.{i}", [f"blocks.{i}"]))
    head = [n for n in _HEAD if n in children and _has_state(children[n])]
    if head:
        out.append(("conv_head", head))
    covered = {"blocks", *stem, *head}
    for name, child in children.items():  # anything unexpected with weights: keep it reachable
        if name not in covered and _has_state(child):
            out.append((name, [name]))
    return out


def backbone_blocks(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's unfreezable units, ordered from input to output.

    timm EfficientNet-family models (EfficientNet, V2, Lite, MobileNetV2/V3): ``stem``
    (``conv_stem`` + ``bn1``), every block of every stage in ``blocks`` flattened
    (``blocks.i.j``), then ``conv_head`` (``conv_head`` + ``bn2``/``norm_head``) when present.
    Other architectures: the top-level children that hold weights, in definition order
    (e.g. ResNet: conv1, bn1, layer1..layer4). Multi-module units are returned as a fresh
    ``nn.Sequential`` view of the current submodules: (un)freezing replaces BatchNorm
    modules, so call this again rather than keeping the modules.
    """
    result: list[tuple[str, nn.Module]] = []
    for name, paths in _block_paths(backbone):
        modules = [backbone.get_submodule(p) for p in paths]
        if len(modules) == 1:
            result.append((name, modules[0]))
        else:
            result.append((name, nn.Sequential(OrderedDict(zip(paths, modules)))))
    return result


def _remember_momentum(backbone: nn.Module) -> None:
    """Record BatchNorm momenta: timm's unfreeze recreates BatchNorm with PyTorch's default 0.1,
    whatever the layer had (timm builds tf_* ports with 0.1 too; ``model.layer_defaults: keras``
    sets Keras's, e.g. 0.01 for EfficientNet V1, which must survive the unfreeze)."""
    memo: dict[str, float | None] = getattr(backbone, _MOMENTUM_ATTR, {})
    for name, module in backbone.named_modules():
        if isinstance(module, _BatchNorm):
            memo[name] = module.momentum
    setattr(backbone, _MOMENTUM_ATTR, memo)


def _drop_paths(module: nn.Module):
    return ((name, m) for name, m in module.named_modules() if type(m).__name__ == "DropPath" and hasattr(m, "drop_prob"))


def _silence_frozen_drop_path(backbone: nn.Module) -> None:
    """Stochastic depth acts only in blocks that train: a frozen block is a fixed function (as
    Keras's transfer-learning recipe calls its frozen base with ``training=False``), so its
    outputs can be cached and run in the frozen runtime. The rates are kept for unfreezing."""
    memo: dict[str, float] = getattr(backbone, _DROP_PATH_ATTR, {})
    for name, module in _drop_paths(backbone):
        memo.setdefault(name, float(module.drop_prob))
        module.drop_prob = 0.0
    setattr(backbone, _DROP_PATH_ATTR, memo)


def _restore_drop_path(backbone: nn.Module, paths: list[str]) -> None:
    memo: dict[str, float] = getattr(backbone, _DROP_PATH_ATTR, {})
    for path in paths:
        for sub, module in _drop_paths(backbone.get_submodule(path)):
            full = f"{path}.{sub}" if sub else path
            module.drop_prob = memo.get(full, module.drop_prob)


def drop_path_rates(backbone: nn.Module) -> dict[str, float]:
    """Each DropPath module's rate as it acts now (0 in frozen blocks)."""
    return {name: float(m.drop_prob) for name, m in _drop_paths(backbone)}


def _restore_unfrozen(backbone: nn.Module, paths: list[str]) -> None:
    """Give recreated BatchNorm layers their momentum, device and the model's train/eval mode."""
    memo: dict[str, float | None] = getattr(backbone, _MOMENTUM_ATTR, {})
    for path in paths:
        root = backbone.get_submodule(path)
        for sub, module in root.named_modules():
            if not isinstance(module, _BatchNorm):
                continue
            full = f"{path}.{sub}" if sub else path
            if full in memo:
                module.momentum = memo[full]
            tracked = module.num_batches_tracked
            if tracked is not None and module.running_mean is not None:
                module.num_batches_tracked = tracked.to(module.running_mean.device)
        root.train(backbone.training)


def _warn_unfrozen_norms(backbone: nn.Module) -> None:
    """timm converts BatchNorm2d (+Act, Sync) only; any other running-stats norm would drift."""
    for name, module in backbone.named_modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            if not any(p.requires_grad for p in module.parameters()):
                logger.warning(
                    "frozen %s (%s) still updates running statistics in train mode",
                    name, type(module).__name__,
                )


def freeze_backbone(model: ClassifierModel) -> None:
    """Stage 1: no backbone parameter trains and no BatchNorm statistic moves; the head trains.

    The backbone's BatchNorm layers become ``FrozenBatchNorm2d``/``FrozenBatchNormAct2d``.
    Build the optimizer after calling this.
    """
    _freeze(model)
    logger.debug("froze the backbone; %d trainable head parameters", _count(model))


def _freeze(model: ClassifierModel) -> None:
    _remember_momentum(model.backbone)
    _silence_frozen_drop_path(model.backbone)
    timm.utils.freeze(model.backbone)
    _warn_unfrozen_norms(model.backbone)
    for param in model.head.parameters():
        param.requires_grad_(True)


def _blocks_to_unfreeze(amount: float | int, total: int) -> int:
    """How many of ``total`` blocks ``amount`` means (see unfreeze_top)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ValueError(
            f"unfreeze amount must be a fraction in (0, 1] or a block count, not {amount!r}"
        )
    if isinstance(amount, int):
        if amount < 1:
            raise ValueError(f"unfreeze block count must be >= 1, not {amount}")
        if amount > total:
            logger.warning(
                "unfreeze %d blocks: the backbone has only %d; unfreezing all", amount, total
            )
        return min(amount, total)
    if not 0.0 < amount <= 1.0 or math.isnan(amount):
        raise ValueError(f"unfreeze fraction must lie in (0, 1], not {amount}")
    # round first: 0.3 * 10 is 3.0000000000000004 and must give 3 blocks, not 4
    return max(1, math.ceil(round(amount * total, 9)))


def unfreeze_top(model: ClassifierModel, amount: float | int) -> list[str]:
    """Stage 2: make the top blocks trainable, keep everything below exactly frozen.

    ``amount``: a float in (0, 1] is the fraction of ``backbone_blocks`` (rounded up), an int
    >= 1 the number of blocks counted from the output side. Unfrozen BatchNorm layers are
    regular BatchNorm again, starting from the loaded running statistics. Returns the names
    of the unfrozen blocks. Parameters are recreated, so build the optimizer afterwards.
    """
    paths_by_block = _block_paths(model.backbone)
    if not paths_by_block:
        raise ValueError(f"{type(model.backbone).__name__} has no blocks with weights to unfreeze")
    count = _blocks_to_unfreeze(amount, len(paths_by_block))
    _freeze(model)  # everything below the chosen blocks: exactly frozen, whatever it was
    chosen = paths_by_block[-count:]
    paths = [p for _, block_paths in chosen for p in block_paths]
    timm.utils.unfreeze(model.backbone, paths)
    _restore_unfrozen(model.backbone, paths)
    _restore_drop_path(model.backbone, paths)
    names = [name for name, _ in chosen]
    logger.debug(
        "unfroze %d of %d backbone blocks (%s .. %s); %d trainable parameters",
        count, len(paths_by_block), names[0], names[-1], _count(model),
    )
    return names


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer should see (``requires_grad``)."""
    return [p for p in model.parameters() if p.requires_grad]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model))


class FrozenSplit:
    """The backbone cut where its frozen part ends: ``lower`` (everything frozen, from the
    input) and ``upper`` (the unfrozen blocks, the feature tail and pooling).

    ``upper(lower(x)) == backbone(x)``. Stage 2 caches ``lower``'s output when its inputs are
    deterministic. Supported: timm EfficientNet-family and MobileNetV3 models, whose forward is
    stem -> blocks -> (conv_head, bn2) -> pooling; :func:`frozen_split` returns None otherwise.
    """

    def __init__(self, backbone: nn.Module, frozen_blocks: list[nn.Module], upper_blocks: list[nn.Module],
                 tail: list[nn.Module]) -> None:
        self.backbone = backbone
        self.lower = nn.Sequential(backbone.conv_stem, backbone.bn1, *frozen_blocks)
        self.upper_blocks, self.tail = upper_blocks, tail
        self.n_frozen_blocks = len(frozen_blocks)

    def upper(self, x):
        for block in (*self.upper_blocks, *self.tail):
            x = block(x)
        return self.backbone.forward_head(x)


def frozen_split(backbone: nn.Module) -> FrozenSplit | None:
    """Cut after the last frozen block (after ``unfreeze_top``); None when the architecture is
    not a plain stem -> blocks chain, when the stem trains, or when a frozen module is random
    in train mode (dropout, drop-path), since then its output is not a fixed function."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3

    if not isinstance(backbone, (EfficientNet, MobileNetV3)) or getattr(backbone, "grad_checkpointing", False):
        return None
    stem = (backbone.conv_stem, backbone.bn1)
    if any(p.requires_grad for m in stem for p in m.parameters()):
        return None
    blocks = [b for stage in backbone.blocks for b in (stage if isinstance(stage, nn.Sequential) else [stage])]
    n = 0
    while n < len(blocks) and not any(p.requires_grad for p in blocks[n].parameters()):
        n += 1
    lower = [*stem, *blocks[:n]]
    for module in (m for part in lower for m in part.modules()):
        p = getattr(module, "drop_prob", None) if not isinstance(module, nn.Dropout) else module.p
        if p:
            return None
    tail = [backbone.conv_head, backbone.bn2] if isinstance(backbone, EfficientNet) else []
    return FrozenSplit(backbone, blocks[:n], blocks[n:], tail)
