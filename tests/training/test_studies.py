"""Issue 9's training side: last-epoch models, training metrics, epoch grids trained once."""

import json

import numpy as np
import pandas as pd
import pytest

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training.plan import group_trainings, plan_units
from allwen.training.runner import run_grid
from allwen.training.unit import RunCaches, train_epoch_grid, train_unit
from allwen.runfolder import UnitFolder


def studies_config(data_path, *extra):
    return load_config("demo", [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.25",
        "train.batch_size=16", "train.keep=last", "train.stage1.patience=null", "train.stage2.patience=null",
        "scenarios={}", *extra,
    ])


@pytest.fixture(scope="module")
def table_split(synth_root):
    cfg = studies_config(synth_root / "training_data")
    table = load_source(cfg.data.path)
    return table, make_split(table, cfg.split)


def test_keep_last_turns_early_stopping_off_unless_a_patience_is_set():
    cfg = load_config(None, ["train.keep=last"])
    assert cfg.train.stage1.patience is None and cfg.train.stage2.patience is None
    cfg = load_config(None, ["train.keep=last", "train.stage2.patience=3"])
    assert cfg.train.stage2.patience == 3
    best = load_config(None, ["train.keep=best"])
    assert best.train.stage1.patience == 5  # the default stays for best


def test_keep_last_saves_the_final_epoch_and_history_has_training_metrics(synth_root, table_split, tmp_path):
    table, split = table_split
    cfg = studies_config(synth_root / "training_data", "train.stage1.epochs=2", "train.stage2.epochs=3",
                         "train.monitor=f1")
    summary = train_unit(cfg, table, split, 0, tmp_path / "u", caches=None)
    hist = pd.read_csv(UnitFolder(tmp_path / "u").history)
    assert summary["keep"] == "last" and summary["best_stage"] == "stage2"
    assert summary["epochs_run"] == {"stage1": 2, "stage2": 3}
    for column in ("train_loss", "train_accuracy", "train_f1", "val_loss", "val_accuracy", "val_f1"):
        assert column in hist and hist[column].notna().all(), column
    assert ((hist["train_accuracy"] >= 0) & (hist["train_accuracy"] <= 1)).all()
    # the saved validation probabilities are the final epoch's: their accuracy is the last row's
    val = pd.read_csv(UnitFolder(tmp_path / "u").predictions("val"))
    accuracy = float((val[[c for c in val if c.startswith("prob_")]].to_numpy().argmax(1) == val["y_true"]).mean())
    assert accuracy == pytest.approx(hist["val_accuracy"].iloc[-1])
    assert summary["best_val_score"] == pytest.approx(hist["val_f1"].iloc[-1])
    # the kept (last) epoch's training metrics, which B and C tabulate, are in unit.json
    kept = summary["train_metrics"]
    assert (kept["stage"], kept["epoch"]) == ("stage2", int(hist["epoch"].iloc[-1]))
    assert kept["accuracy"] == pytest.approx(hist["train_accuracy"].iloc[-1])
    assert kept["loss"] == pytest.approx(hist["train_loss"].iloc[-1])


def _assert_same_unit(a_dir, b_dir, label):
    for name in ("predictions_val.csv", "predictions_test.csv"):
        a, b = pd.read_csv(a_dir / name), pd.read_csv(b_dir / name)
        probs = [c for c in a if c.startswith("prob_")]
        assert np.abs(a[probs].to_numpy() - b[probs].to_numpy()).max() <= 1e-6, (label, name)
    ha, hb = pd.read_csv(UnitFolder(a_dir).history), pd.read_csv(UnitFolder(b_dir).history)
    assert len(ha) == len(hb)
    assert np.allclose(ha["val_accuracy"], hb["val_accuracy"]) and np.allclose(ha["train_loss"], hb["train_loss"], atol=1e-6)


def test_epoch_grid_trained_once_equals_separate_trainings(synth_root, table_split, tmp_path):
    """Stage 2 with an exponential (per-step) schedule: one training, three units, each equal
    to its own training (every probability within 1e-6), through the grid runner."""
    table, split = table_split
    cfg = studies_config(synth_root / "training_data", "train.stage1.epochs=1", "train.schedule=exponential",
                         "train.decay_steps=3", "train.decay_rate=0.5", "scenarios={train.stage2.epochs: [2, 1]}",
                         "split.folds=1", "split.val_fraction=0.25", "data.augment=none")
    split = make_split(table, cfg.split)
    units = plan_units(cfg, split.n_folds, tmp_path / "once")
    assert len(units) == 2 and len(group_trainings(units)) == 1
    run_grid(cfg, table, split, tmp_path / "once", quiet=True)
    for unit in units:
        info = json.loads(UnitFolder(unit.folder).info_path.read_text())
        assert len(info["one_training_for"]) == 2 and "files" in info
        assert info["epochs_run"]["stage2"] == unit.cfg.train.stage2.epochs
        separate = tmp_path / "separate" / unit.scenario
        train_unit(unit.cfg, table, split, unit.fold, separate, caches=RunCaches(tmp_path / "once" / "cache"))
        _assert_same_unit(unit.folder, separate, unit.name)


def test_stage1_epoch_grid_trained_once_equals_separate_trainings(synth_root, table_split, tmp_path):
    """Stage 1 only (the head on cached features), constant schedule."""
    table, split = table_split
    cfg = studies_config(synth_root / "training_data", "train.stage2=null", "scenarios={train.stage1.epochs: [2, 4]}")
    units = [u for u in plan_units(cfg, split.n_folds, tmp_path / "once") if u.fold == 1]
    train_epoch_grid([(u.cfg, u.folder) for u in units], table, split, 1, RunCaches(tmp_path / "cache"))
    for unit in units:
        separate = tmp_path / "separate" / unit.scenario
        train_unit(unit.cfg, table, split, 1, separate, caches=RunCaches(tmp_path / "cache"))
        _assert_same_unit(unit.folder, separate, unit.name)


def test_cosine_best_or_patience_train_each_count_alone(synth_root, tmp_path):
    grid = "scenarios={train.stage2.epochs: [1, 2]}"
    for extra in (["train.schedule=cosine"], ["train.keep=best"], ["train.stage2.patience=2"]):
        cfg = studies_config(synth_root / "training_data", grid, *extra)
        units = plan_units(cfg, 2, tmp_path)
        assert len(group_trainings(units)) == 4, extra
