"""Frozen parts in the frozen runtime during training, and stage 1 on augmented images (issue 18)."""

import json

import numpy as np
import pandas as pd
import pytest

from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training import stages
from allwen.training.unit import RunCaches, train_unit, unit_context

from tests.training.test_unit import tiny_config
from allwen.runfolder import UnitFolder

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def setup(synth_root):
    cfg = tiny_config(synth_root / "training_data", "train.stage2=null", "evaluation.tta=true")
    table = load_source(cfg.data.path)
    return cfg, table, make_split(table, cfg.split)


def _probabilities(folder):
    out = {}
    for name in ("predictions_val.csv", "predictions_test.csv", "predictions_test_tta.csv"):
        frame = pd.read_csv(folder / name)
        out[name] = frame[[c for c in frame if c.startswith("prob_")]].to_numpy()
    return out


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_torch_and_auto_give_the_same_probabilities(setup, tmp_path, solver):
    """Every validation, test and TTA probability within 1e-4; the L-BFGS head (the
    taleqani_4class preset's, L2 down to 1e-5) keeps the same strength in both runtimes."""
    cfg, table, split = setup
    results, summaries = {}, {}
    for runtime in ("torch", "auto"):
        run_cfg = cfg.model_copy(deep=True)
        run_cfg.train.frozen_runtime = runtime
        if solver == "lbfgs":
            run_cfg.train.stage1.solver, run_cfg.train.stage1.l2 = "lbfgs", [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
        folder = tmp_path / runtime
        summaries[runtime] = train_unit(run_cfg, table, split, 0, folder, caches=RunCaches(tmp_path / "cache"))
        results[runtime] = _probabilities(folder)
    assert summaries["torch"]["frozen_runtime"] == {"stage1": "torch"}
    assert summaries["auto"]["frozen_runtime"] == {"stage1": "onnxruntime"}
    assert summaries["auto"]["feature_cache"] is True
    for name, torch_proba in results["torch"].items():
        assert np.abs(results["auto"][name] - torch_proba).max() < 1e-4, name
    assert summaries["torch"]["train_metrics"]["epoch"] == summaries["auto"]["train_metrics"]["epoch"]
    # the runtime is part of the key: each runtime's features (1 view, 8 TTA views) cached apart
    keys = list((tmp_path / "cache" / "features").glob("*.json"))
    assert len(keys) == 4
    assert list((tmp_path / "cache" / "frozen_runtime").glob("*.onnx"))  # the export, cached once


def test_stage2_runs_its_frozen_lower_blocks_in_the_runtime(setup, tmp_path):
    cfg, table, split = setup
    results = {}
    for runtime in ("torch", "auto"):
        run_cfg = cfg.model_copy(deep=True)
        run_cfg.train.frozen_runtime = runtime
        run_cfg.train.stage1.epochs = 0
        run_cfg.train.stage2 = run_cfg.train.stage1.model_copy(update={"epochs": 1, "augment": True})
        run_cfg.train.unfreeze = 0.5
        run_cfg.evaluation.tta = False
        folder = tmp_path / runtime  # flips and colour jitter: no stage-2 cache, images every epoch
        summary = train_unit(run_cfg, table, split, 0, folder, caches=RunCaches(tmp_path / "cache"))
        assert summary["stage2_cache"] is False and summary["augmented"] == {"stage2": True}
        assert summary["frozen_runtime"] == {"stage2": "torch" if runtime == "torch" else "onnxruntime"}
        results[runtime] = pd.read_csv(UnitFolder(folder).predictions("test"))
    cols = [c for c in results["torch"] if c.startswith("prob_")]
    # the same random draws; the frozen part agrees to 1e-5, one epoch of training keeps it close
    assert np.abs(results["auto"][cols].to_numpy() - results["torch"][cols].to_numpy()).max() < 1e-3


def test_augmented_stage1_sees_new_inputs_every_epoch(setup, tmp_path, monkeypatch):
    cfg, table, split = setup
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.train.stage1.augment = True  # flips_color: every epoch's images are new draws
    run_cfg.evaluation.tta = False
    seen: list[str] = []
    real = stages.frozen_forward

    def recording(*args, **kwargs):
        runner = real(*args, **kwargs)
        inner = runner.run

        def run(x):
            seen.extend(np.round(x.flatten(1).sum(1).numpy(), 3).astype(str).tolist())
            return inner(x)

        runner.run = run
        return runner

    monkeypatch.setattr(stages, "frozen_forward", recording)
    from allwen.models import runtime as rt

    rt._LOADED.clear()
    summary = train_unit(run_cfg, table, split, 0, tmp_path / "u", caches=RunCaches(tmp_path / "cache"))
    rt._LOADED.clear()
    assert summary["feature_cache"] is False and summary["augmented"] == {"stage1": True}
    assert summary["frozen_runtime"] == {"stage1": "onnxruntime"}
    n_train, n_val = summary["n_train"], summary["n_val"]
    # 2 epochs of augmented training images + the same validation images each epoch: more
    # distinct inputs than the un-augmented images could give (a cache would repeat them)
    assert len(set(seen)) >= 2 * n_train
    assert not list((tmp_path / "cache" / "features").glob("*.npy"))  # nothing cached for stage 1


@pytest.mark.parametrize("augment, stage1_augment, kind, views", [
    ("flips_color", True, "images", None),       # random draws: the backbone runs on every batch
    ("flips_color", False, "features", 1),       # the documented cached option
    ("none", True, "features", 1),               # nothing random: the cache is exact
    ("dihedral", True, "features", 8),           # 8 exact views, each cached
    ("crop_rotate_flip_shift", True, "images", None),
])
def test_the_cached_path_is_used_only_when_exact(setup, tmp_path, augment, stage1_augment, kind, views):
    cfg, table, split = setup
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.data.augment = augment
    run_cfg.train.stage1.augment = stage1_augment
    ctx = unit_context(run_cfg, table, split, 0, tmp_path / "logs", RunCaches(tmp_path / "cache"))
    inputs = stages.stage1_inputs(ctx)
    assert inputs.kind == kind
    assert inputs.augmented is (stage1_augment and augment != "none")
    if views is not None:
        shapes = [json.loads(p.read_text())["shape"] for p in (tmp_path / "cache" / "features").glob("*.json")]
        assert [views] == [s[0] for s in shapes]


def test_experiment_a_augments_both_stages_and_the_cached_option_is_one_key():
    from allwen.config import load_config

    cfg = load_config("experiment_a")
    assert cfg.train.stage1.augment is True and cfg.train.stage2.augment is True
    assert load_config("experiment_a", ["train.stage1.augment=false"]).train.stage1.augment is False
    old = load_config("demo", ["train.stage1_augment=true"])  # the old spelling still loads
    assert old.train.stage1.augment is True and old.train.stage1_augment is None
