"""SeLU6 values and the expansion-activation swap of Experiment D."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models._efficientnet_blocks import EdgeResidual
from torch import nn

from allwen.models import SeLU6, freeze_backbone, swap_expansion_activation
from allwen.models.heads import ClassifierModel, build_head


def test_selu6_hand_computed_points() -> None:
    scale, alpha = 1.0507009873554805, 1.6732632423543772
    x = torch.tensor([-1.0, 0.0, 1.0, 5.0, 10.0])
    expected = torch.tensor(
        [scale * alpha * (torch.exp(torch.tensor(-1.0)).item() - 1.0), 0.0, scale, 6.0, 6.0]
    )
    # selu(5) = 5.2535 < 6 stays; selu(10) = 10.507 is capped at 6
    expected[3] = 5 * scale
    torch.testing.assert_close(SeLU6()(x), expected, atol=1e-5, rtol=0)
    assert SeLU6()(torch.tensor([-100.0])).item() == pytest.approx(-scale * alpha, abs=1e-5)


def test_swap_on_test_efficientnet_changes_only_expansion_acts() -> None:
    torch.manual_seed(0)
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    before = backbone(x)
    stem_act = type(backbone.bn1.act)
    first_block_act = backbone.blocks[0][0].bn1.act  # ConvBnAct: no expansion
    count = swap_expansion_activation(backbone)
    assert count == 4  # 2 EdgeResidual + 2 InvertedResidual
    assert sum(isinstance(m, SeLU6) for m in backbone.modules()) == 4
    for stage in (1, 2, 3, 4):
        assert isinstance(backbone.blocks[stage][0].bn1.act, SeLU6)
    assert not isinstance(backbone.blocks[3][0].bn2.act, SeLU6)  # depthwise act untouched
    assert backbone.blocks[0][0].bn1.act is first_block_act
    assert type(backbone.bn1.act) is stem_act
    after = backbone(x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert not torch.equal(after, before)


def test_swap_on_fused_mbconv_block() -> None:
    block = nn.Sequential(EdgeResidual(8, 8, exp_ratio=4.0))
    assert swap_expansion_activation(block) == 1
    assert isinstance(block[0].bn1.act, SeLU6)
    assert block(torch.randn(2, 8, 8, 8)).shape == (2, 8, 8, 8)


def test_swapped_activation_survives_freezing() -> None:
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    swap_expansion_activation(backbone)
    model = ClassifierModel(backbone, build_head("softmax", 256, 3), "softmax", 3)
    freeze_backbone(model)
    assert sum(isinstance(m, SeLU6) for m in model.modules()) == 4


def test_swap_refuses_backbone_without_expansion_blocks() -> None:
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match="ResNet"):
        swap_expansion_activation(backbone)
