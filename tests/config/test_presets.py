"""Every study preset builds its model (random init, offline) and runs a forward pass, and names
the weights, optimizer constants, averaging and headline numbers of its paper."""

import json
import re
from importlib import resources

import pytest
import torch
from typer.testing import CliRunner

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
                                         "experiment_c_as_run": 12, "experiment_d": 9, "experiment_e": 1, "taleqani_binary": 3,
                                         "taleqani_4class": 2}[preset]
    # B's grid is its sweep (three steps; the last is the run's scenarios)
    assert len(cfg.sweep) == (3 if preset == "experiment_b" else 0)


STUDY_PRESETS = [p for p in list_presets() if p.startswith("experiment_")]


def _leading_comment(preset: str) -> str:
    text = (resources.files("allwen.config") / "presets" / f"{preset}.yaml").read_text()
    return "\n".join(line for line in text.splitlines() if line.startswith("#"))


def test_there_are_the_five_studies_and_their_variants():
    assert set(STUDY_PRESETS) == {"experiment_a", "experiment_a_subject", "experiment_b", "experiment_c",
                                  "experiment_c_as_run", "experiment_d", "experiment_e"}


@pytest.mark.parametrize("preset", STUDY_PRESETS)
def test_study_preset_builds_the_weights_its_comment_names(preset):
    """The comment's ``Weights: ARCH.TAG`` is what timm builds: the resolved config's backbone
    and tag, and the ``pretrained_cfg`` of the network made from them (random init: offline)."""
    from allwen.models import create_backbone, resolve_pretrained_tag

    named = re.search(r"# Weights: ([a-z0-9_]+)\.([a-z0-9_]+)", _leading_comment(preset))
    assert named, f"{preset}: the leading comment names no 'Weights: ARCH.TAG'"
    cfg = load_config(preset)
    assert (cfg.model.backbone, cfg.model.pretrained_tag) == named.groups()
    assert resolve_pretrained_tag(cfg.model.backbone, cfg.model.pretrained_tag) == named.group(2)
    backbone = create_backbone(cfg.model.backbone, "none", cfg.model.pretrained_tag)
    assert backbone.pretrained_cfg["tag"] == named.group(2)


@pytest.mark.parametrize("preset", ["experiment_a", "experiment_a_subject", "experiment_d"])
def test_efficientnetv2_studies_use_imagenet_1k_not_timms_21k_default(preset):
    from allwen.models import resolve_pretrained_tag

    cfg = load_config(preset)
    assert resolve_pretrained_tag(cfg.model.backbone) == "in21k_ft_in1k"  # what weights: hub alone would load
    assert cfg.model.pretrained_tag == "in1k"
    tagged = load_config(preset, ["model.pretrained_tag=in21k_ft_in1k"])  # the 21k weights stay one --set away
    assert resolve_pretrained_tag(tagged.model.backbone, tagged.model.pretrained_tag) == "in21k_ft_in1k"


@pytest.mark.parametrize("preset", ["experiment_a", "experiment_d"])
def test_allwen_config_shows_the_1k_tag(preset):
    from allwen.cli import app

    result = CliRunner().invoke(app, ["config", preset])
    assert result.exit_code == 0, result.output
    assert "  pretrained_tag: in1k\n" in result.stdout


# how each paper averages precision, recall and F1 (PROTOCOLS.md, "Details that change the numbers")
AVERAGE = {"experiment_a": "binary", "experiment_a_subject": "binary", "experiment_b": "weighted",
           "experiment_c": "macro", "experiment_c_as_run": "macro", "experiment_d": "binary", "experiment_e": "macro"}


@pytest.mark.parametrize("preset", STUDY_PRESETS)
def test_study_presets_use_keras_constants_their_papers_averaging_and_carry_a_paper_block(preset):
    from allwen.evaluation.metrics import ALL_METRIC_NAMES

    cfg = load_config(preset)
    assert cfg.train.optimizer_defaults == "keras"  # every study ran on Keras
    assert cfg.evaluation.average == AVERAGE[preset]
    assert cfg.paper is not None and cfg.paper.numbers
    assert cfg.paper.test_images and all(n.where for n in cfg.paper.numbers)
    assert {n.metric for n in cfg.paper.numbers} <= set(ALL_METRIC_NAMES)


def test_paper_numbers_are_the_protocols_headlines():
    e = load_config("experiment_e").paper
    assert (e.test_images, {n.metric: n.value for n in e.numbers}) == (
        652, {"accuracy": 0.956, "precision_macro": 0.948, "recall_macro": 0.962, "f1_macro": 0.955})
    b = load_config("experiment_b").paper
    assert {n.metric: n.value for n in b.numbers}["recall_weighted"] == 0.9848
    c = load_config("experiment_c").paper
    assert c.selected_on == "test" and {n.metric: n.value for n in c.numbers}["recall_macro"] == 0.94


def test_paper_metric_names_are_metrics():
    from allwen.config.schema import PAPER_METRICS
    from allwen.evaluation.metrics import ALL_METRIC_NAMES

    assert set(PAPER_METRICS) <= set(ALL_METRIC_NAMES)


def test_experiment_c_as_run_validates_on_test_and_differs_from_c_only_there():
    a, b = load_config("experiment_c").model_dump(), load_config("experiment_c_as_run").model_dump()
    assert b["split"]["validate_on"] == "test" and a["split"]["validate_on"] == "fold"
    for key in ("data", "model", "train", "scenarios", "ensemble", "evaluation"):
        assert a[key] == b[key], key
    comment = _leading_comment("experiment_c_as_run")
    assert "2,821" in comment and "inflates" in comment


def test_experiment_c_as_run_dry_run_json():
    from allwen.cli import app

    result = CliRunner().invoke(app, ["run", "experiment_c_as_run", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(plan["units"]) == 12 and plan["trainings"] == 2  # one training per batch size, snapshots per epoch count


def test_experiment_d_writes_its_equations():
    cfg = load_config("experiment_d")
    assert (cfg.model.activation, cfg.model.head) == ("selu6_paper", "fc_relu_softmax")
