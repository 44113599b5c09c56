"""The real training engine on tiny synthetic data with a tiny timm backbone (CPU)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import lightning.pytorch as pl

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.models import build_classifier, load_weights
from allwen.training.feature_cache import FeatureCache
from allwen.training.task import balanced_class_weights, resolve_class_weights
from allwen.training.unit import RunCaches, train_unit
from allwen.runfolder import UnitFolder


def tiny_config(data_path, *extra):
    return load_config("demo", [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.25",
        "train.stage1.epochs=2", "train.stage2.epochs=2", "train.stage1.patience=null",
        "train.stage2.patience=null", "train.batch_size=16", "scenarios={}", *extra,
    ])


@pytest.fixture(scope="module")
def setup(synth_root):
    cfg = tiny_config(synth_root / "training_data")
    table = load_source(cfg.data.path)
    return cfg, table, make_split(table, cfg.split)


def _fresh_model(cfg, seed):
    pl.seed_everything(seed, verbose=False)
    return build_classifier(cfg.model, 2)


def _backbone_tensors(model):
    state = model.backbone.state_dict()
    return {k: v.clone() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_stage1_leaves_the_backbone_untouched_and_trains_the_head(setup, tmp_path):
    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.stage2 = None
    cfg.train.feature_cache = False  # the image path: frozen backbone really runs in train mode
    initial = _fresh_model(cfg, cfg.train.seed)
    summary = train_unit(cfg, table, split, 0, tmp_path / "u", caches=None)
    assert summary["epochs_run"] == {"stage1": 2, "stage2": 0}
    trained = _fresh_model(cfg, 123)
    load_weights(trained, tmp_path / "u" / "weights.safetensors")
    before, after = _backbone_tensors(initial), _backbone_tensors(trained)
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are compared too
    assert _changed(before, after) == set()
    head_before = dict(initial.head.state_dict())
    assert any(not torch.equal(v, trained.head.state_dict()[k]) for k, v in head_before.items())


def test_stage2_changes_only_the_unfrozen_top_and_the_head(setup, tmp_path, monkeypatch):
    # the winning stage below depends on the thread count (summation order): pinned, so that a
    # machine with more CPUs, or a test worker given one thread, trains what this test expects
    monkeypatch.setenv("ALLWEN_THREADS", "2")
    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.unfreeze = 0.5
    cfg.train.stage2.epochs = 3
    cfg.train.lr = 0.01
    initial = _fresh_model(cfg, cfg.train.seed)
    summary = train_unit(cfg, table, split, 0, tmp_path / "u", caches=RunCaches(tmp_path / "cache"))
    assert summary["best_stage"] == "stage2"  # deterministic on CPU: fine-tuning wins on this data
    trained = _fresh_model(cfg, 123)
    load_weights(trained, tmp_path / "u" / "weights.safetensors")
    changed = _changed(_backbone_tensors(initial), _backbone_tensors(trained))
    unfrozen = summary["unfrozen_blocks"]
    assert changed, "fine-tuning changed nothing"
    prefixes = tuple(p for b in unfrozen for p in (("conv_head.", "bn2.") if b == "conv_head" else (b + ".",)))
    assert all(k.startswith(prefixes) for k in changed), (changed, unfrozen)
    lower = [k for k in _backbone_tensors(initial) if k.startswith(("conv_stem", "bn1", "blocks.0", "blocks.1"))]
    assert lower and not set(lower) & changed


def test_class_weights_are_balanced_on_the_training_fold():
    labels = np.array([0] * 30 + [1] * 70)
    weights = balanced_class_weights(labels, 2)
    assert weights == pytest.approx([100 / (2 * 30), 100 / (2 * 70)])
    assert resolve_class_weights("none", labels, 2) is None
    assert list(resolve_class_weights([1.0, 3.0], labels, 2)) == [1.0, 3.0]
    with pytest.raises(ValueError, match="no images of class"):
        balanced_class_weights(np.array([1, 1, 1]), 2)


def test_unit_records_fold_class_weights(setup, tmp_path):
    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.stage1.epochs, cfg.train.stage2 = 1, None
    summary = train_unit(cfg, table, split, 1, tmp_path / "u", caches=None)
    y = table.label_indices()[split.folds[1][0]]
    expected = len(y) / (2 * np.bincount(y, minlength=2))
    assert summary["class_weights"] == pytest.approx(expected.tolist())


def test_cached_stage1_matches_uncached(setup, tmp_path):
    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.stage2 = None
    cfg.train.stage1.epochs = 3
    results = {}
    for cached in (False, True):
        cfg.train.feature_cache = cached
        folder = tmp_path / f"cached={cached}"
        train_unit(cfg, table, split, 0, folder, caches=RunCaches(tmp_path / "cache") if cached else None)
        results[cached] = (pd.read_csv(UnitFolder(folder).history), pd.read_csv(UnitFolder(folder).predictions("val")))
    (h0, p0), (h1, p1) = results[False], results[True]
    # tolerance: the same arithmetic in another batch composition; 1e-4 on losses and probabilities
    for col in ("train_loss", "val_loss", "val_accuracy", "val_kappa", "val_auc"):
        assert np.allclose(h0[col], h1[col], atol=1e-4), col
    prob_cols = [c for c in p0 if c.startswith("prob_")]
    assert np.allclose(p0[prob_cols], p1[prob_cols], atol=1e-4)


def test_schedules_follow_their_formulas():
    from allwen.config.schema import TrainConfig
    from allwen.training.task import build_scheduler

    def lrs(cfg, steps):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=3)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if sched is not None:
                sched.step()
        return out

    exp = lrs(TrainConfig(lr=1e-4, schedule="exponential", decay_steps=900, decay_rate=0.95), 901)
    assert exp[900] == pytest.approx(1e-4 * 0.95)  # TF ExponentialDecay: lr * rate ** (step / steps)
    assert exp[450] == pytest.approx(1e-4 * 0.95 ** 0.5)
    cos = lrs(TrainConfig(lr=1.0, schedule="cosine"), 31)
    assert cos[0] == pytest.approx(1.0) and cos[15] == pytest.approx(0.5) and cos[30] == pytest.approx(0.0, abs=1e-12)
    assert set(lrs(TrainConfig(lr=0.1), 5)) == {0.1}


def test_feature_cache_computes_each_image_once_and_names_its_rows(tmp_path):
    import json

    cache = FeatureCache(tmp_path)
    hashes = ["a", "b", "a", "c", "d"]
    calls, asked = [], []

    def compute(positions):  # positions in the list of hashes asked for
        calls.append([asked[-1][p] for p in positions])
        yield np.array([[ord(asked[-1][p])] * 2 for p in positions], dtype=np.float32)

    asked.append(hashes[:3])
    values, rows = cache.outputs("k", asked[-1], (2,), "float32", compute)
    assert calls == [["a", "b"]] and values[rows][:, 0].tolist() == [97, 98, 97]
    asked.append(hashes[::-1])
    values, rows = FeatureCache(tmp_path).outputs("k", asked[-1], (2,), "float32", compute)
    assert calls[1] == ["d", "c"]  # only the new images
    assert values[rows][:, 0].tolist() == [100, 99, 97, 98, 97]
    index = json.loads((tmp_path / "k.json").read_text())
    assert index["keys"] == ["a", "b", "d", "c"] and index["file"] == "k-4.npy"
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["k-4.npy"]  # the 2-row file is gone


def test_tensorboard_logger_by_config(setup, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; pip install tensorboard")
    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.stage1.epochs, cfg.train.stage2 = 1, None
    cfg.train.logger = "tensorboard"
    train_unit(cfg, table, split, 0, tmp_path / "u", caches=None)
    assert list((tmp_path / "u" / "logs" / "stage1").rglob("events.out.tfevents.*"))


def test_checkpoint_carries_its_preprocessing(setup, tmp_path):
    from allwen.models import read_metadata

    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.stage1.epochs, cfg.train.stage2 = 1, None
    train_unit(cfg, table, split, 0, tmp_path / "u", caches=None)
    meta = read_metadata(tmp_path / "u" / "weights.safetensors")
    assert meta["classes"] == ["hem", "all"] and meta["backbone"] == "test_efficientnet"
    # the unit's preprocessing is one record, written once: in the weights and as data_config.json
    from allwen.bundle import Preprocessing

    pre = Preprocessing.model_validate(meta["preprocessing"])
    assert pre.image_size == 32 and len(pre.mean) == 3 and (pre.clahe, pre.clahe_grid) == (cfg.data.clahe, cfg.data.clahe_grid)
    saved = json.loads((tmp_path / "u" / "data_config.json").read_text())
    assert saved == {**meta["preprocessing"], "classes": ["hem", "all"]}
    assert not {"image_size", "data_config", "clahe"} & set(meta)


@pytest.mark.parametrize("augment", ["dihedral", "none"])
def test_stage2_on_cached_frozen_part_matches_images(setup, tmp_path, augment):
    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.data.augment = augment
    cfg.train.stage1.epochs, cfg.train.stage2.epochs = 0, 2  # stage 2 only: its weights are the ones saved
    cfg.train.unfreeze, cfg.train.lr = 0.5, 0.01
    results = {}
    for cached in (False, True):
        cfg.train.stage2_cache = cached
        folder = tmp_path / f"cached={cached}"
        summary = train_unit(cfg, table, split, 0, folder, caches=RunCaches(tmp_path / "cache"))
        assert summary["stage2_cache"] is cached and summary["decode_cache"]
        results[cached] = [pd.read_csv(folder / f) for f in ("history.csv", "predictions_val.csv", "predictions_test.csv")]
    assert summary["best_stage"] == "stage2"
    (h0, *p0), (h1, *p1) = results[False], results[True]
    # tolerance: the same float32 arithmetic, the frozen part run once instead of per batch; 1e-4
    for col in ("train_loss", "val_loss", "val_accuracy", "val_kappa", "val_auc"):
        assert np.allclose(h0[col], h1[col], atol=1e-4), (col, h0[col].tolist(), h1[col].tolist())
    for a, b in zip(p0, p1):
        cols = [c for c in a if c.startswith("prob_")]
        assert np.allclose(a[cols], b[cols], atol=1e-4)
    cached_files = list((tmp_path / "cache" / "features").glob("*.npy"))
    assert len(cached_files) == 1  # the frozen part's output, computed once


def test_gpu_flags_and_cpu_determinism():
    from allwen.config.schema import Config
    from allwen.training.stages import trainer_flags

    cfg = Config()
    cpu, gpu = trainer_flags(cfg, torch.device("cpu")), trainer_flags(cfg, torch.device("cuda"))
    assert cpu["deterministic"] is True and cpu["benchmark"] is False and cpu["precision"] == "32-true"
    assert gpu["deterministic"] is False and gpu["benchmark"] is True and gpu["precision"] == "bf16-mixed"
    cfg.train.deterministic = True
    assert trainer_flags(cfg, torch.device("cuda"))["benchmark"] is False


def test_saved_validation_probabilities_are_the_best_epochs(setup, tmp_path, caplog):
    from allwen.evaluation.metrics import compute_metrics
    from allwen.training import unit as unit_module

    cfg, table, split = setup
    cfg = cfg.model_copy(deep=True)
    cfg.train.stage2.epochs = 1
    caplog.set_level("WARNING")
    unit_module.LARGE_ON_CPU, before = 0, unit_module.LARGE_ON_CPU  # any model counts as large here
    try:
        summary = train_unit(cfg, table, split, 1, tmp_path / "u", caches=RunCaches(tmp_path / "cache"))
    finally:
        unit_module.LARGE_ON_CPU = before
    assert "about to train on CPU" in caplog.text
    pred = pd.read_csv(UnitFolder(tmp_path / "u").predictions("val"))
    accuracy = compute_metrics(pred["y_true"].to_numpy(), pred[["prob_hem", "prob_all"]].to_numpy())["accuracy"]
    assert accuracy == pytest.approx(summary["best_val_score"])  # kept from the best epoch, not predicted again


def test_kept_epoch_is_the_best_epoch_not_a_float32_value_match():
    from allwen.training.stages import StageResult
    from allwen.training.unit import kept_epoch

    history = [{"stage": "stage1", "epoch": 0, "val_accuracy": 2 / 3}, {"stage": "stage1", "epoch": 1, "val_accuracy": 0.5}]
    logged = float(torch.tensor(2 / 3))  # Lightning logs float32: the best score is not history's float64
    assert logged != 2 / 3
    result = StageResult("stage1", history, logged, {}, None, None, best_epoch=0)
    assert kept_epoch(result, "best")["epoch"] == 0
