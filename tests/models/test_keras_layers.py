"""Each study preset's model as Keras applications build it (``train.optimizer_defaults: keras``):
EfficientNet drop-connect 0.2, Keras's BatchNorm constants, glorot_uniform heads. The real timm
architectures, random weights (offline; the five build in about 6 s)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from allwen.config import load_config
from allwen.config.schema import Config, keras_efficientnet
from allwen.models import build_classifier, freeze_backbone, unfreeze_top
from allwen.models.freeze import drop_path_rates

#: preset -> (Keras EfficientNet family, backbone BatchNorm momentum in PyTorch's meaning, its epsilon)
STUDIES = {
    "experiment_a": ("v2", 0.1, 1e-3),   # EfficientNetV2-M: Keras momentum 0.9, epsilon 1e-3
    "experiment_b": ("v1", 0.01, 1e-3),  # EfficientNet-B0: Keras momentum 0.99, epsilon 1e-3
    "experiment_c": ("v1", 0.01, 1e-3),  # EfficientNet-B3
    "experiment_d": ("v2", 0.1, 1e-3),   # EfficientNetV2-S
    "experiment_e": (None, 0.1, 1e-5),   # MobileNetV2: frozen, its PyTorch-trained statistics untouched
}
CLASSES = {"experiment_b": 4, "experiment_e": 4}


def _model(preset: str, *overrides: str):
    cfg = load_config(preset, ["model.weights=none", *overrides])
    return cfg, build_classifier(cfg.resolved_model(), CLASSES.get(preset, 2))


@pytest.mark.parametrize("preset", sorted(STUDIES))
def test_study_model_has_kerass_drop_path_batchnorm_and_head_init(preset):
    family, momentum, eps = STUDIES[preset]
    cfg, model = _model(preset)
    assert keras_efficientnet(cfg.model.backbone) == family
    resolved = cfg.resolved_model()
    assert resolved.layer_defaults == "keras"
    rates = list(drop_path_rates(model.backbone).values())
    if family:  # Keras: drop_connect_rate * b / blocks for block b = 0 .. blocks-1
        assert resolved.drop_path == 0.2
        n = len(rates) + 1  # timm builds no DropPath for the first block (rate 0)
        assert rates[-1] == pytest.approx(0.2 * (n - 1) / n)
    else:
        assert resolved.drop_path == 0.0 and rates == []
    norms = [m for m in model.backbone.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.momentum == momentum and m.eps == pytest.approx(eps) for m in norms)
    head_norms = [m for m in model.head.modules() if isinstance(m, _BatchNorm)]
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in head_norms)
    assert bool(head_norms) == (preset == "experiment_c")  # C's head: GAP, BatchNorm, Dense 256, ...
    for layer in (m for m in model.head.modules() if isinstance(m, nn.Linear)):
        fan_in, fan_out = layer.in_features, layer.out_features
        assert torch.all(layer.bias == 0)
        std = float(layer.weight.detach().std())
        if preset == "experiment_d":  # the paper's own N(0, 1/n_in) stays
            assert std == pytest.approx(fan_in ** -0.5, rel=0.1)
        else:  # glorot_uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out)), std b / sqrt(3)
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert float(layer.weight.detach().abs().max()) <= bound
            if layer.weight.numel() >= 500:
                assert std == pytest.approx(bound / 3 ** 0.5, rel=0.1)


def test_torch_defaults_build_pytorchs_layers():
    cfg, model = _model("experiment_c", "train.optimizer_defaults=torch")
    assert cfg.resolved_model().drop_path == 0.0 and drop_path_rates(model.backbone) == {}
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, _BatchNorm))
    first = model.head[1]  # PyTorch's Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias not zero
    assert float(first.weight.detach().abs().max()) <= first.in_features ** -0.5 and torch.any(first.bias != 0)


def test_drop_path_is_a_key_that_overrides_the_default():
    assert Config(model={"backbone": "tf_efficientnet_b0", "drop_path": 0.1},
                  train={"optimizer_defaults": "keras"}).resolved_model().drop_path == 0.1
    assert Config(model={"backbone": "tf_efficientnet_b0"}).resolved_model().drop_path == 0.0
    assert Config(model={"backbone": "tf_efficientnet_lite0"},  # not a Keras application
                  train={"optimizer_defaults": "keras"}).resolved_model().drop_path == 0.0


def test_drop_path_acts_only_in_the_blocks_that_train_and_momentum_survives_unfreezing():
    _, model = _model("experiment_c")
    built = drop_path_rates(model.backbone)
    freeze_backbone(model)
    assert set(drop_path_rates(model.backbone).values()) == {0.0}  # frozen: a fixed function, cacheable
    unfrozen = unfreeze_top(model, 0.3)
    after = drop_path_rates(model.backbone)
    top = [name for name in after if any(name.startswith(block + ".") for block in unfrozen)]
    assert top and all(after[name] == built[name] > 0 for name in top)
    assert all(after[name] == 0.0 for name in after if name not in top)
    trained_norms = [m for m in model.backbone.modules() if isinstance(m, _BatchNorm) and m.weight.requires_grad]
    assert trained_norms and all(m.momentum == 0.01 for m in trained_norms)
