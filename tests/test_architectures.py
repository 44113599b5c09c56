"""Architectures as scenarios, end to end: two tiny timm backbones (random init) in one run,
each with its own feature-cache entry and preprocessing, ensembles across them, the lbfgs head."""

import json

import pytest

from allwen.config import load_config
from allwen.pipeline import run_pipeline
from allwen.runfolder import RunFolder


@pytest.fixture(scope="module")
def two_backbone_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("arch") / "r"
    cfg = load_config("demo", [
        f"data.path={synth_root / 'training_data'}", "split.folds=2", "split.test=0.3", "evaluation.bootstrap=100",
        "train.stage2=null", "train.stage1.solver=lbfgs", "train.stage1.l2=[0.01, 0.1]",
        "scenarios={model: [{backbone: test_efficientnet, weights: none, data.image_size: 32}, "
        "{backbone: test_resnet, weights: none, data.image_size: 40}]}",
    ])
    run_pipeline(cfg, out, quiet=True)
    return out


def test_each_backbone_is_a_scenario_with_its_own_cache_and_size(two_backbone_run):
    units = RunFolder(two_backbone_run).units_dir
    assert sorted(p.name for p in units.iterdir()) == ["backbone=test_efficientnet_image_size=32",
                                                       "backbone=test_resnet_image_size=40"]
    for name, backbone, size in (("backbone=test_efficientnet_image_size=32", "test_efficientnet", 32),
                                 ("backbone=test_resnet_image_size=40", "test_resnet", 40)):
        config = json.loads((units / name / "fold_0" / "data_config.json").read_text())
        assert config["image_size"] == size
        unit = json.loads(RunFolder(two_backbone_run).unit(name, 1).info_path.read_text())
        assert unit["feature_cache"] and unit["best_stage"] == "stage1"
        assert RunFolder(two_backbone_run).scenario_config_path(name).read_text().count(f"backbone: {backbone}") == 1
    entries = list((two_backbone_run / "cache" / "features").glob("*.json"))
    assert len(entries) == 2, entries  # one per backbone, shared by its folds


def test_ensembles_combine_the_backbones(two_backbone_run):
    summary = json.loads(RunFolder(two_backbone_run).summary_path.read_text())
    scenarios = ["backbone=test_efficientnet_image_size=32", "backbone=test_resnet_image_size=40"]
    intra = [e for e in summary["ensembles"] if e["kind"] == "intra"]
    assert intra and all(sorted(m.split("/")[0] for m in e["members"]) == scenarios for e in intra)
    greedy = next(e for e in summary["ensembles"] if e["kind"] == "scenarios")
    assert set(greedy["members"]) <= set(scenarios) and greedy["weighting"] == "greedy"
    assert len(summary["single_models"]) == 4 and len(summary["champions"]) == 2


def test_linear_probe_benchmark_reads_each_backbones_cached_features(two_backbone_run):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "linear_probe.py"), str(two_backbone_run)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert sorted(out["probes"]) == ["backbone=test_efficientnet_image_size=32", "backbone=test_resnet_image_size=40"]
    summary = json.loads(RunFolder(two_backbone_run).summary_path.read_text())
    for probe in out["probes"].values():
        value, (lo, hi) = probe["accuracy"]
        assert lo <= value <= hi and probe["features"] > 0
    assert out["n_test"] == summary["evaluation"]["n_test"]
    assert out["run_best_single_by_validation"]["name"] == summary["best_single"]
