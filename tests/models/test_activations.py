"""SeLU6 values and the expansion-activation swap of Experiment D."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models._efficientnet_blocks import EdgeResidual, InvertedResidual
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
    assert count == 2  # the 2 InvertedResidual (MBConv) blocks; the 2 EdgeResidual keep theirs
    assert sum(isinstance(m, SeLU6) for m in backbone.modules()) == 2
    for stage in (3, 4):
        assert isinstance(backbone.blocks[stage][0].bn1.act, SeLU6)
    for stage in (1, 2):
        assert not isinstance(backbone.blocks[stage][0].bn1.act, SeLU6)
    assert not isinstance(backbone.blocks[3][0].bn2.act, SeLU6)  # depthwise act untouched
    assert backbone.blocks[0][0].bn1.act is first_block_act
    assert type(backbone.bn1.act) is stem_act
    after = backbone(x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert not torch.equal(after, before)


def test_fused_mbconv_blocks_keep_their_activation() -> None:
    block = nn.Sequential(EdgeResidual(8, 8, exp_ratio=4.0))
    with pytest.raises(ValueError, match="no MBConv"):
        swap_expansion_activation(block)
    assert not isinstance(block[0].bn1.act, SeLU6)


def test_efficientnetv2_s_swaps_exactly_its_30_mbconv_expansions() -> None:
    """Experiment D's backbone: stages 3-5 are MBConv (6 + 9 + 15 blocks); stages 1-2 are
    Fused-MBConv and keep SiLU, as do every depthwise step, the stem and the head."""
    backbone = timm.create_model("tf_efficientnetv2_s", pretrained=False, num_classes=0)
    acts_before = sum(isinstance(m, nn.SiLU) for m in backbone.modules())
    assert swap_expansion_activation(backbone) == 30
    assert sum(isinstance(m, SeLU6) for m in backbone.modules()) == 30
    assert sum(isinstance(m, nn.SiLU) for m in backbone.modules()) == acts_before - 30
    for name, module in backbone.named_modules():
        if isinstance(module, EdgeResidual):
            assert not isinstance(module.bn1.act, SeLU6), name
        if isinstance(module, InvertedResidual):
            assert isinstance(module.bn1.act, SeLU6) and not isinstance(module.bn2.act, SeLU6), name


def test_swapped_activation_survives_freezing() -> None:
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    swap_expansion_activation(backbone)
    model = ClassifierModel(backbone, build_head("softmax", 256, 3), "softmax", 3)
    freeze_backbone(model)
    assert sum(isinstance(m, SeLU6) for m in model.modules()) == 2


def test_swap_refuses_backbone_without_expansion_blocks() -> None:
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match="ResNet"):
        swap_expansion_activation(backbone)


def _act_kinds(backbone: nn.Module) -> dict[str, set[type]]:
    """The activation classes at each place Experiment D's equations name."""
    from timm.models._efficientnet_blocks import ConvBnAct, SqueezeExcite

    kinds: dict[str, set[type]] = {"expansion": set(), "depthwise": set(), "squeeze_excite": set(), "fused": set()}
    for module in backbone.modules():
        if isinstance(module, InvertedResidual):
            kinds["expansion"].add(type(module.bn1.act))
            kinds["depthwise"].add(type(module.bn2.act))
        elif isinstance(module, (EdgeResidual, ConvBnAct)):
            kinds["fused"].add(type(module.bn1.act))
        elif isinstance(module, SqueezeExcite):
            kinds["squeeze_excite"].add(type(module.act1))
    return kinds


def test_selu6_paper_on_efficientnetv2_s_sets_each_equation_and_counts_per_kind() -> None:
    """D's Eqs. 1, 2, 4, 7 on V2-S: 30 MBConv blocks (expansion + depthwise + SE each), 10
    Fused-MBConv (2 expansion-1 ConvBnAct + 8 EdgeResidual); only stem and head keep SiLU."""
    from allwen.models import apply_activation

    backbone = timm.create_model("tf_efficientnetv2_s", pretrained=False, num_classes=0)
    assert _act_kinds(backbone) == {k: {nn.SiLU} for k in ("expansion", "depthwise", "squeeze_excite", "fused")}
    counts = apply_activation(backbone, "selu6_paper")
    assert counts == {"expansion": 30, "depthwise": 30, "squeeze_excite": 30, "fused": 10}
    assert _act_kinds(backbone) == {"expansion": {SeLU6}, "depthwise": {nn.ReLU6}, "squeeze_excite": {nn.ReLU},
                                    "fused": {nn.ReLU}}
    assert sum(isinstance(m, SeLU6) for m in backbone.modules()) == 30
    assert sum(isinstance(m, nn.ReLU6) for m in backbone.modules()) == 30
    assert sum(type(m) is nn.ReLU for m in backbone.modules()) == 40
    assert sum(isinstance(m, nn.SiLU) for m in backbone.modules()) == 2  # stem and head convolutions
    assert type(backbone.bn1.act) is nn.SiLU and type(backbone.bn2.act) is nn.SiLU


def test_selu6_paper_changes_the_output_more_than_selu6_alone_and_selu6_keeps_the_rest() -> None:
    from allwen.models import apply_activation

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    outs = {}
    for activation in ("native", "selu6", "selu6_paper"):
        torch.manual_seed(1)
        backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
        counts = apply_activation(backbone, activation)
        outs[activation] = backbone(x)
        if activation == "selu6":
            assert counts == {"expansion": 2}
            assert _act_kinds(backbone)["depthwise"] == {nn.SiLU} and _act_kinds(backbone)["fused"] == {nn.SiLU}
        if activation == "selu6_paper":
            assert counts == {"expansion": 2, "depthwise": 2, "squeeze_excite": 2, "fused": 3}
    assert not torch.equal(outs["selu6"], outs["selu6_paper"]) and not torch.equal(outs["native"], outs["selu6"])
    with pytest.raises(ValueError, match="selu6_paper"):
        apply_activation(timm.create_model("test_resnet", pretrained=False, num_classes=0), "selu6_paper")
