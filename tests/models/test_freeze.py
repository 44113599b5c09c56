"""Frozen means unchanged: parameters AND BatchNorm running statistics, in train mode."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import FrozenBatchNormAct2d
from timm.layers.norm_act import BatchNormAct2d

from allwen.config.schema import ModelConfig
from allwen.models import (
    ClassifierModel,
    backbone_blocks,
    build_classifier,
    freeze_backbone,
    trainable_parameters,
    unfreeze_top,
)
from allwen.models.freeze import _blocks_to_unfreeze

Snapshot = dict[str, dict[str, torch.Tensor]]


def _model(seed: int = 0) -> ClassifierModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="test_efficientnet", weights="none", head="softmax", dropout=0.0)
    return build_classifier(cfg, 3)


def _train(model: ClassifierModel, steps: int = 3) -> None:
    """A few Adam steps in train mode on random data (batch statistics differ from running)."""
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=1e-2)
    model.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(6, 3, 32, 32, generator=generator) * 2 + 1
        y = torch.randint(0, 3, (6,), generator=generator)
        optimizer.zero_grad()
        model.loss(model(x), y).backward()
        optimizer.step()


def _snapshot(model: ClassifierModel) -> Snapshot:
    return {
        name: {k: v.detach().clone() for k, v in block.state_dict().items()}
        for name, block in backbone_blocks(model.backbone)
    }


def _identical(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _head_state(model: ClassifierModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.head.state_dict().items()}


def test_blocks_of_efficientnet_cover_the_whole_backbone_in_order() -> None:
    model = _model()
    blocks = backbone_blocks(model.backbone)
    names = [name for name, _ in blocks]
    assert names == [
        "stem", "blocks.0.0", "blocks.1.0", "blocks.2.0", "blocks.3.0", "blocks.4.0", "conv_head",
    ]
    assert sum(len(b.state_dict()) for _, b in blocks) == len(model.backbone.state_dict())


def test_blocks_fall_back_to_top_level_children() -> None:
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    names = [name for name, _ in backbone_blocks(backbone)]
    assert names == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]


def test_frozen_backbone_is_bit_identical_after_training() -> None:
    model = _model()
    freeze_backbone(model)
    assert not any(isinstance(m, BatchNormAct2d) for m in model.backbone.modules())
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert {id(p) for p in trainable_parameters(model)} == {id(p) for p in model.head.parameters()}
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = _head_state(model)
    _train(model)
    backbone_after = model.backbone.state_dict()
    assert any(k.endswith("running_mean") for k in backbone_before)
    assert _identical(backbone_before, backbone_after)
    assert not _identical(head_before, _head_state(model))


def test_requires_grad_alone_lets_batchnorm_statistics_drift() -> None:
    """Negative control: without FrozenBatchNorm the 'frozen' backbone changes in train mode."""
    model = _model()
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    params_before = {k: v.clone() for k, v in model.backbone.named_parameters()}
    stats_before = {
        k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k
    }
    _train(model)
    params_after = dict(model.backbone.named_parameters())
    stats_after = model.backbone.state_dict()
    assert all(torch.equal(params_before[k], params_after[k]) for k in params_before)
    assert any(not torch.equal(stats_before[k], stats_after[k]) for k in stats_before)


def test_unfreeze_top_trains_only_the_top_blocks() -> None:
    model = _model()
    freeze_backbone(model)
    _train(model, steps=1)
    names = unfreeze_top(model, 0.3)
    assert names == ["blocks.3.0", "blocks.4.0", "conv_head"]  # ceil(0.3 * 7) = 3
    before, head_before = _snapshot(model), _head_state(model)
    _train(model)
    after = _snapshot(model)
    for name in before:
        if name in names:
            assert not _identical(before[name], after[name]), name
            stats = [k for k in before[name] if k.endswith("running_mean")]
            assert stats and any(not torch.equal(before[name][k], after[name][k]) for k in stats)
        else:
            assert _identical(before[name], after[name]), name
    assert not _identical(head_before, _head_state(model))


def test_unfreeze_keeps_loaded_values_and_batchnorm_settings() -> None:
    model = _model()
    bn = model.backbone.bn2
    bn.momentum = 0.01  # as in TF-ported weights
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.weight.uniform_(0.5, 1.5)
    values = {k: v.clone() for k, v in bn.state_dict().items() if "num_batches" not in k}
    freeze_backbone(model)
    assert isinstance(model.backbone.bn2, FrozenBatchNormAct2d)
    unfreeze_top(model, 1)
    restored = model.backbone.bn2
    assert isinstance(restored, BatchNormAct2d)
    assert restored.momentum == 0.01 and restored.eps == bn.eps
    assert all(torch.equal(values[k], restored.state_dict()[k]) for k in values)
    assert restored.weight.requires_grad and type(restored.act) is type(bn.act)


def test_unfreeze_counts_and_refreezing() -> None:
    model = _model()
    assert unfreeze_top(model, 2) == ["blocks.4.0", "conv_head"]  # freezes the rest itself
    assert not model.backbone.conv_stem.weight.requires_grad
    assert len(unfreeze_top(model, 1.0)) == 7
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert len(unfreeze_top(model, 100)) == 7
    freeze_backbone(model)
    assert not any(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("amount", [0, -1, 0.0, 1.5, -0.2, True, float("nan"), "0.3"])
def test_unfreeze_rejects_bad_amounts(amount: object) -> None:
    with pytest.raises(ValueError):
        unfreeze_top(_model(), amount)  # type: ignore[arg-type]


def test_fraction_rounding() -> None:
    assert _blocks_to_unfreeze(0.3, 10) == 3
    assert _blocks_to_unfreeze(0.3, 7) == 3
    assert _blocks_to_unfreeze(0.01, 7) == 1
    assert _blocks_to_unfreeze(1.0, 7) == 7
