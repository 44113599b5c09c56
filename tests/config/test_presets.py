"""Every study preset builds its model (random init, offline) and runs a forward pass."""

import pytest
import torch

from allwen.config import expand_scenarios, list_presets, load_config
from allwen.models import build_classifier, freeze_backbone, trainable_parameters

N_CLASSES = {"experiment_b": 4, "experiment_e": 4, "taleqani_4class": 4}


@pytest.mark.parametrize("preset", [p for p in list_presets() if p != "demo"])
def test_preset_model_builds_and_predicts(preset):
    cfg = load_config(preset, ["model.weights=none"])
    k = N_CLASSES.get(preset, 2)
    model = build_classifier(cfg.model, k).eval()
    with torch.no_grad():
        proba = model.probabilities(model(torch.randn(2, 3, 64, 64)))
    assert proba.shape == (2, k) and torch.allclose(proba.sum(1), torch.ones(2))
    if preset == "experiment_e":  # the study's 164,484 trainable parameters
        freeze_backbone(model)
        assert sum(p.numel() for p in trainable_parameters(model)) == 164_484
    if preset == "experiment_d":
        assert any(type(m).__name__ == "SeLU6" for m in model.backbone.modules())
    assert len(expand_scenarios(cfg)) == {"experiment_a": 3, "experiment_a_subject": 3, "experiment_b": 1, "experiment_c": 12,
                                         "experiment_d": 9, "experiment_e": 1, "taleqani_binary": 3,
                                         "taleqani_4class": 2}[preset]
    # B's grid is its sweep (three steps; the last is the run's scenarios)
    assert len(cfg.sweep) == (3 if preset == "experiment_b" else 0)
