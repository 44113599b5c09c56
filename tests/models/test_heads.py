"""Heads by name and the ClassifierModel's logits, probabilities and loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from allwen.config.schema import ModelConfig
from allwen.models import (
    HEADS,
    ClassifierModel,
    SeLU6,
    build_classifier,
    build_head,
    freeze_backbone,
    trainable_parameters,
)


def _tiny(head: str, num_classes: int, **kwargs: object) -> ClassifierModel:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_efficientnet", weights="none", head=head, **kwargs)
    return build_classifier(cfg, num_classes)


@pytest.mark.parametrize(
    ("name", "k", "out"), [("sigmoid", 2, 1), ("softmax", 3, 3), ("mlp256", 4, 4), ("mlp128", 4, 4), ("fc_relu", 4, 4)]
)
def test_head_output_shapes(name: str, k: int, out: int) -> None:
    head = build_head(name, 16, k, dropout=0.2)
    assert head(torch.randn(5, 16)).shape == (5, out)


def test_registry_names_match_config_schema() -> None:
    assert set(HEADS) == {"sigmoid", "softmax", "mlp256", "mlp128", "fc_relu", "fc_relu_softmax"}


def test_unknown_head_lists_known_names() -> None:
    with pytest.raises(ValueError, match="mlp128.*mlp256.*sigmoid.*softmax"):
        build_head("mlp512", 16, 2)


def test_sigmoid_head_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="softmax"):
        build_head("sigmoid", 16, 4)


def test_mlp256_layout() -> None:
    head = build_head("mlp256", 32, 3, dropout=0.4)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["BatchNorm1d", "Linear", "ReLU", "Dropout", "Linear"]
    assert head[1].out_features == 256 and head[3].p == 0.4


def test_mlp128_on_mobilenetv2_has_published_parameter_count() -> None:
    cfg = ModelConfig(backbone="mobilenetv2_100", weights="none", head="mlp128")
    model = build_classifier(cfg, 4)
    freeze_backbone(model)
    assert sum(p.numel() for p in trainable_parameters(model)) == 164_484


def test_mobilenetv3_head_gets_conv_head_width() -> None:
    cfg = ModelConfig(backbone="mobilenetv3_large_100", weights="none", head="softmax")
    model = build_classifier(cfg, 3).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)  # 1280 features, not 960


def test_sigmoid_model_logits_and_probabilities() -> None:
    model = _tiny("sigmoid", 2).eval()
    x = torch.randn(3, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (3, 1)
    torch.testing.assert_close(model.head_forward(model.features(x)), logits)
    probs = model.probabilities(logits)
    assert probs.shape == (3, 2)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))


def test_softmax_model_probabilities() -> None:
    model = _tiny("softmax", 4).eval()
    probs = model.probabilities(model(torch.randn(3, 3, 32, 32)))
    assert probs.shape == (3, 4)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_sigmoid_loss_equals_two_class_softmax_loss_with_class_weights() -> None:
    sigmoid, softmax = _tiny("sigmoid", 2), _tiny("softmax", 2)
    z = torch.tensor([[1.5], [-0.3], [0.2], [-2.0]])
    targets = torch.tensor([1, 0, 0, 1])
    weights = torch.tensor([0.7, 1.9])
    pair = torch.cat([torch.zeros_like(z), z], dim=1)
    torch.testing.assert_close(
        sigmoid.loss(z, targets, weights), softmax.loss(pair, targets, weights)
    )
    torch.testing.assert_close(sigmoid.loss(z, targets), softmax.loss(pair, targets))
    manual = F.cross_entropy(pair, targets, weight=weights)
    torch.testing.assert_close(softmax.loss(pair, targets, weights), manual)


def test_loss_rejects_wrong_number_of_class_weights() -> None:
    model = _tiny("softmax", 3)
    with pytest.raises(ValueError, match="3-class"):
        model.loss(torch.randn(2, 3), torch.tensor([0, 2]), torch.ones(2))


def test_selu6_config_swaps_activations() -> None:
    model = _tiny("softmax", 3, activation="selu6")
    assert any(isinstance(m, SeLU6) for m in model.backbone.modules())
    assert model.head_name == "softmax" and model.num_classes == 3


def test_fc_relu_head_has_its_width_and_lecun_normal_weights() -> None:
    """Experiment D: GAP -> Dense(width) -> ReLU -> Dense(K) softmax, weights ~ N(0, 1/n_in)."""
    torch.manual_seed(0)
    head = build_head("fc_relu", 1280, 2, width=512)
    first, last = head[0], head[3]
    assert (first.in_features, first.out_features, last.out_features) == (1280, 512, 2)
    assert isinstance(head[1], torch.nn.ReLU)
    assert first.weight.std().item() == pytest.approx(1280 ** -0.5, rel=0.02)
    assert last.weight.std().item() == pytest.approx(512 ** -0.5, rel=0.1)
    assert torch.count_nonzero(first.bias) == 0


def test_fc_relu_softmax_is_ds_head_as_written() -> None:
    """D's paper: GAP -> one FC layer to the classes -> ReLU -> softmax, N(0, 1/n_in), zero bias."""
    torch.manual_seed(0)
    head = build_head("fc_relu_softmax", 1280, 2)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1280, 2)]
    assert isinstance(head[-1], torch.nn.ReLU)
    assert linears[0].weight.std().item() == pytest.approx(1280 ** -0.5, rel=0.1)
    assert torch.count_nonzero(linears[0].bias) == 0
    logits = head(torch.randn(64, 1280))
    assert (logits >= 0).all() and (logits == 0).any()  # scores clipped at 0 before the softmax
    model = _tiny("fc_relu_softmax", 2, activation="selu6_paper")
    proba = model.probabilities(model(torch.randn(2, 3, 32, 32)))
    assert torch.allclose(proba.sum(1), torch.ones(2))
    assert sum(p.numel() for p in model.head.parameters()) == model.backbone.num_features * 2 + 2
