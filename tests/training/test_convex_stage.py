"""``train.stage1.solver: lbfgs`` inside a real unit: cached features, same files as Adam's, stage 2 after it."""

import json

import numpy as np
import pandas as pd
import pytest

from allwen.config import load_config
from allwen.config.load import ConfigError
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.evaluation.metrics import compute_metrics
from allwen.training.unit import RunCaches, train_unit
from allwen.runfolder import UnitFolder



def tiny_config(data_path, *extra):
    return load_config("demo", [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.25",
        "train.stage1.epochs=2", "train.stage2.epochs=1", "train.batch_size=16", "scenarios={}", *extra,
    ])


@pytest.fixture(scope="module")
def setup(synth_root):
    cfg = tiny_config(synth_root / "training_data", "train.stage1.solver=lbfgs", "train.stage1.l2=[0.1, 0.001]",
                      "train.stage2=null")
    table = load_source(cfg.data.path)
    return cfg, table, make_split(table, cfg.split)


def test_lbfgs_stage1_writes_a_unit_like_adam(setup, tmp_path):
    cfg, table, split = setup
    summary = train_unit(cfg, table, split, 0, tmp_path / "u", caches=RunCaches(tmp_path / "cache"))
    assert summary["feature_cache"] and summary["best_stage"] == "stage1"
    history = pd.read_csv(UnitFolder(tmp_path / "u").history)
    assert list(history["l2"]) == [0.1, 0.001] and (history["iterations"] > 0).all()  # one row per strength
    pred = pd.read_csv(UnitFolder(tmp_path / "u").predictions("val"))
    accuracy = compute_metrics(pred["y_true"].to_numpy(), pred[["prob_hem", "prob_all"]].to_numpy())["accuracy"]
    assert accuracy == pytest.approx(summary["best_val_score"])  # the chosen strength's validation probabilities
    assert summary["best_val_score"] == pytest.approx(history["val_accuracy"].max())
    chosen = int(np.flatnonzero(np.isclose(history["val_accuracy"], summary["best_val_score"]))[0])
    assert summary["train_metrics"]["epoch"] == chosen  # the kept row: the chosen strength's


def test_lbfgs_kept_row_is_the_chosen_strength_when_monitoring_loss(synth_root, tmp_path):
    cfg = tiny_config(synth_root / "training_data", "train.stage1.solver=lbfgs", "train.stage1.l2=[10.0, 0.001]",
                      "train.stage2=null", "train.monitor=loss")
    table = load_source(cfg.data.path)
    summary = train_unit(cfg, table, make_split(table, cfg.split), 0, tmp_path / "u", caches=RunCaches(tmp_path / "c"))
    history = pd.read_csv(UnitFolder(tmp_path / "u").history)
    chosen = int(history["val_loss"].idxmin())
    assert history["val_loss"][chosen] == pytest.approx(summary["best_val_score"])
    assert summary["train_metrics"]["epoch"] == chosen


def test_lbfgs_head_is_where_stage2_starts(setup, tmp_path):
    cfg = setup[0].model_copy(deep=True)
    cfg.train.stage2 = cfg.train.stage1.model_copy(update={"solver": "adam", "epochs": 1, "patience": None})
    summary = train_unit(cfg, setup[1], setup[2], 1, tmp_path / "u", caches=RunCaches(tmp_path / "cache"))
    history = pd.read_csv(UnitFolder(tmp_path / "u").history)
    assert summary["epochs_run"] == {"stage1": 2, "stage2": 1}
    assert set(history["stage"]) == {"stage1", "stage2"}


@pytest.mark.parametrize("extra, message", [
    (["model.head=mlp128"], "needs a linear head"),
    (["train.stage1_augment=true"], "fits the head on cached features"),
    (["train.stage2.solver=lbfgs"], "only stage 1's linear head is convex"),
    (["train.stage1.l2=[0.0]"], "strengths must be > 0"),
])
def test_lbfgs_where_it_cannot_apply_is_a_clear_error(synth_root, tmp_path, extra, message):
    def run():
        cfg = tiny_config(synth_root / "training_data", "train.stage1.solver=lbfgs", *extra)
        table = load_source(cfg.data.path)
        train_unit(cfg, table, make_split(table, cfg.split), 0, tmp_path / "u", caches=RunCaches(tmp_path / "c"))

    with pytest.raises((ConfigError, ValueError), match=message):
        run()


def test_tta_of_a_frozen_backbone_head_from_cached_views_matches_images(synth_root, tmp_path):
    """evaluation.tta with the backbone frozen: the head on the 8 views' cached features gives
    what the whole model on the 8 rotated images gives (cached per backbone, once for all folds)."""
    cfg = tiny_config(synth_root / "training_data", "train.stage2=null", "evaluation.tta=true")
    table = load_source(cfg.data.path)
    split = make_split(table, cfg.split)
    preds = {}
    for cached in (True, False):
        cfg.train.feature_cache = cached
        folder = tmp_path / f"cached={cached}"
        train_unit(cfg, table, split, 0, folder, caches=RunCaches(tmp_path / "cache") if cached else None)
        preds[cached] = pd.read_csv(UnitFolder(folder).predictions("tta"))
    cols = ["prob_hem", "prob_all"]
    assert list(preds[True]["path"]) == list(preds[False]["path"])
    assert np.abs(preds[True][cols].to_numpy() - preds[False][cols].to_numpy()).max() < 1e-4
    plain = pd.read_csv(UnitFolder(tmp_path / "cached=True").predictions("test"))
    assert np.abs(plain[cols].to_numpy() - preds[True][cols].to_numpy()).max() > 1e-6  # the views do differ
    keys = [json.loads(p.read_text())["shape"][0] for p in (tmp_path / "cache" / "features").glob("*.json")]
    assert sorted(keys) == [1, 8]  # the training features and the test side's 8 views
