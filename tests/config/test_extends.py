"""``extends:``: a preset or config says only what differs from its parent; choices come from the registries."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from allwen.config import ConfigError, load_config


def test_experiment_a_subject_is_a_few_lines_on_experiment_a():
    text = (resources.files("allwen.config") / "presets" / "experiment_a_subject.yaml").read_text()
    raw = yaml.safe_load(text)
    assert raw["extends"] == "experiment_a" and set(raw) <= {"extends", "name", "split", "paper"}
    parent, child = load_config("experiment_a").model_dump(), load_config("experiment_a_subject").model_dump()
    assert (child["split"]["test"], child["split"]["group_by"], child["split"]["duplicate_aware"]) == (
        "official", "subject", True)
    for section in ("data", "model", "train", "ensemble", "evaluation", "scenarios"):
        assert child[section] == parent[section], section


def test_a_file_extends_a_preset_then_a_file_and_set_comes_last(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: demo\ntrain: {lr: 0.02, stage1: {epochs: 7}}\ndata: {path: cells}\n")
    (tmp_path / "child.yaml").write_text("extends: ./base.yaml\ntrain: {stage1: {patience: 2}}\nscenarios: {}\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.lr=0.5"])
    demo = load_config("demo")
    assert cfg.train.lr == 0.5  # --set over the file over its parents
    assert (cfg.train.stage1.epochs, cfg.train.stage1.patience) == (7, 2)  # sections merge key by key
    assert cfg.train.batch_size == demo.train.batch_size and cfg.model == demo.model
    assert cfg.scenarios == {}  # a grid is replaced whole
    assert cfg.data.path == str((tmp_path / "cells").resolve())  # relative to the file that says it


def test_extends_loops_and_unknown_parents_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: ./b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: ./a.yaml\n")
    with pytest.raises(ConfigError, match="extends .* again"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: no_such_preset\n")
    with pytest.raises(ConfigError, match="no preset 'no_such_preset'"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [demo]\n")
    with pytest.raises(ConfigError, match="extends must name a preset or a YAML file"):
        load_config(tmp_path / "d.yaml")


def test_schema_choices_are_the_registries_names():
    from allwen.config.schema import EnsembleConfig, ModelConfig
    from allwen.ensemble.weighting import NOT_SCORES, WEIGHTINGS
    from allwen.evaluation import selection
    from allwen.models.heads import HEADS

    def choices(model, field):
        return set(model.model_json_schema()["properties"][field].get("enum")
                   or model.model_json_schema()["properties"][field]["items"]["enum"])

    assert choices(ModelConfig, "head") == set(HEADS)
    assert choices(EnsembleConfig, "weightings") == set(WEIGHTINGS) | set(NOT_SCORES)
    assert choices(EnsembleConfig, "champion_metric") == set(selection.SELECTION_METRICS)
    assert choices(EnsembleConfig, "champion_by") == set(selection.CHAMPION_BY)


def test_experiment_c_as_run_is_experiment_c_but_for_its_protocol():
    """The preset extends its parent: everything but the name, validate_on and the paper's differences is C's."""
    from allwen.config import load_config

    parent = load_config("experiment_c").model_dump(mode="json")
    child = load_config("experiment_c_as_run").model_dump(mode="json")
    assert child["name"] == "experiment_c_as_run" and child["split"]["validate_on"] == "test"
    assert parent["split"]["validate_on"] == "fold"
    for c in (parent, child):
        c.pop("name"), c["split"].pop("validate_on"), c["paper"].pop("differences")
    assert child == parent
