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
from allwen.training.unit import train_unit


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
    hist = pd.read_csv(tmp_path / "u" / "history.csv")
    assert summary["keep"] == "last" and summary["best_stage"] == "stage2"
    assert summary["epochs_run"] == {"stage1": 2, "stage2": 3}
    for column in ("train_loss", "train_accuracy", "train_f1", "val_loss", "val_accuracy", "val_f1"):
        assert column in hist and hist[column].notna().all(), column
    assert ((hist["train_accuracy"] >= 0) & (hist["train_accuracy"] <= 1)).all()
    # the saved validation probabilities are the final epoch's: their accuracy is the last row's
    val = pd.read_csv(tmp_path / "u" / "predictions_val.csv")
    accuracy = float((val[[c for c in val if c.startswith("prob_")]].to_numpy().argmax(1) == val["y_true"]).mean())
    assert accuracy == pytest.approx(hist["val_accuracy"].iloc[-1])
    assert summary["best_val_score"] == pytest.approx(hist["val_f1"].iloc[-1])


@pytest.mark.parametrize("schedule, last", [("exponential", "stage2"), ("constant", "stage1")])
def test_epoch_grid_trained_once_equals_separate_trainings(synth_root, table_split, tmp_path, schedule, last):
    table, split = table_split
    stage = f"train.{last}.epochs"
    extra = ["train.stage1.epochs=1", f"train.schedule={schedule}", "train.decay_steps=3", "train.decay_rate=0.5"]
    if last == "stage1":
        extra.append("train.stage2=null")
    cfg = studies_config(synth_root / "training_data", *extra, f"scenarios={{{stage}: [1, 3, 2]}}")
    units = plan_units(cfg, split.n_folds, tmp_path / "once")
    groups = group_trainings(units)
    assert len(units) == 6 and len(groups) == 2  # 3 epoch counts x 2 folds: one training per fold
    run_grid(cfg, table, split, tmp_path / "once", quiet=True)
    for unit in units:
        info = json.loads((unit.folder / "unit.json").read_text())
        assert len(info["one_training_for"]) == 3 and "files" in info
        separate = tmp_path / "separate" / unit.scenario / f"fold_{unit.fold}"
        train_unit(unit.cfg, table, split, unit.fold, separate, caches=None)
        for name in ("predictions_val.csv", "predictions_test.csv"):
            a, b = pd.read_csv(unit.folder / name), pd.read_csv(separate / name)
            probs = [c for c in a if c.startswith("prob_")]
            assert np.abs(a[probs].to_numpy() - b[probs].to_numpy()).max() <= 1e-6, (unit.name, name)
        ha, hb = pd.read_csv(unit.folder / "history.csv"), pd.read_csv(separate / "history.csv")
        assert len(ha) == len(hb)
        assert np.allclose(ha["val_accuracy"], hb["val_accuracy"]) and np.allclose(ha["train_loss"], hb["train_loss"], atol=1e-6)


def test_cosine_best_or_patience_train_each_count_alone(synth_root, tmp_path):
    grid = "scenarios={train.stage2.epochs: [1, 2]}"
    for extra in (["train.schedule=cosine"], ["train.keep=best"], ["train.stage2.patience=2"]):
        cfg = studies_config(synth_root / "training_data", grid, *extra)
        units = plan_units(cfg, 2, tmp_path)
        assert len(group_trainings(units)) == 4, extra
