"""One unit on several devices (``train.devices``): Lightning DDP on CPU processes (gloo)."""

import numpy as np
import pandas as pd
import pytest
import torch

from allwen.config import load_config
from allwen.config.load import ConfigError
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.evaluation.metrics import compute_metrics
from allwen.io import record_files
from allwen.training.shards import ShardSampler, merge_shards, shard_positions
from allwen.runfolder import UnitFolder
from allwen.training.unit import RunCaches, select_device, train_unit


def tiny_config(data_path, *extra):
    return load_config("demo", [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.25",
        "train.stage1.patience=null", "train.stage2.patience=null", "train.batch_size=16",
        "data.num_workers=0", "scenarios={}", *extra,
    ])


@pytest.fixture(scope="module")
def setup(synth_root):
    cfg = tiny_config(synth_root / "training_data")
    table = load_source(cfg.data.path)
    return table, make_split(table, cfg.split)


def _rank_rows(n, world):
    """What each rank's loader yields for the items 0..n-1: (world, rows per rank)."""
    return [list(ShardSampler(range(n), n, rank, world)) for rank in range(world)]


@pytest.mark.parametrize("n,world", [(48, 2), (47, 2), (10, 3), (5, 4), (2, 4), (1, 1)])
def test_validation_shards_merge_to_every_row_once_in_order(n, world):
    rows = _rank_rows(n, world)
    assert len({len(r) for r in rows}) == 1  # equal shards: all_gather needs equal shapes
    values = torch.tensor(rows, dtype=torch.float64)[..., None] * 10  # a "probability row" per item
    positions = torch.stack([torch.as_tensor(shard_positions(n, rank, world)) for rank in range(world)])
    merged = merge_shards(values, positions, n)
    assert merged[:, 0].tolist() == [10.0 * i for i in range(n)]  # padding dropped, split order


def test_merge_refuses_a_missing_or_doubled_row():
    positions = torch.tensor([[0, 2], [1, 1]])
    with pytest.raises(RuntimeError, match="exactly once"):
        merge_shards(torch.zeros(2, 2, 3), positions, 3)


def test_global_batches_are_the_single_device_batches():
    """Rank r takes items r, r+N, ...: with batch B/N per rank, step k of all ranks together
    trains exactly the items of the single-device batch k, and an epoch has as many steps."""
    order = torch.randperm(48, generator=torch.Generator().manual_seed(0)).tolist()
    world, batch = 4, 16
    ranks = [list(ShardSampler(order, 48, rank, world)) for rank in range(world)]
    per_rank = batch // world
    steps = [[r[i:i + per_rank] for i in range(0, len(r), per_rank)] for r in ranks]
    assert {len(s) for s in steps} == {48 // batch}
    for k in range(48 // batch):
        assert sorted(i for s in steps for i in s[k]) == sorted(order[k * batch:(k + 1) * batch])


def test_devices_must_split_the_batch(synth_root):
    with pytest.raises(ConfigError, match="does not split over train.devices=3"):
        tiny_config(synth_root / "training_data", "train.devices=3")
    with pytest.raises(ConfigError, match="devices"):
        tiny_config(synth_root / "training_data", "train.devices=0")


def test_more_devices_than_visible_gpus_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError) as err:
        select_device("gpu", 2)
    message = str(err.value)
    assert "train.devices=2 but 1 CUDA device(s) visible" in message and "\n" not in message
    assert select_device("gpu", 1).type == "cuda"


def test_head_on_cached_features_stays_on_one_device(setup, synth_root, tmp_path, caplog):
    table, split = setup
    cfg = tiny_config(synth_root / "training_data", "train.devices=2", "train.stage1.epochs=1", "train.stage2=null")
    caplog.set_level("INFO")
    summary = train_unit(cfg, table, split, 0, tmp_path / "u", caches=RunCaches(tmp_path / "cache"))
    assert summary["feature_cache"] and summary["train_devices"] == {"stage1": 1}
    assert "head on cached features trains on one device (train.devices=2" in caplog.text
    assert not list((tmp_path / "u" / "logs").glob("*-ddp"))


def _kept_row(history: pd.DataFrame, best_stage: str) -> pd.Series:
    """keep: best, monitor accuracy: the first epoch of the kept stage with its best accuracy."""
    rows = history[history["stage"] == best_stage]
    return rows.loc[rows["val_accuracy"].idxmax()]


def test_stage2_on_two_cpu_processes_writes_the_unit_and_the_whole_validation_fold(setup, synth_root, tmp_path):
    """Stage 2 on images with DDP over 2 gloo processes: every unit file; predictions_val.csv
    lists every validation image once in split order; the kept epoch's validation accuracy in
    history.csv is the one recomputed from predictions_val.csv; and one device predicting with
    the saved weights gives those probabilities (every rank validated the same model)."""
    from allwen.models import load_weights
    from allwen.training.stages import StageResult, image_inputs, predict_rows
    from allwen.training.unit import unit_context

    table, split = setup
    cfg = tiny_config(synth_root / "training_data", "train.devices=2", "train.stage1.epochs=0",
                      "train.stage2.epochs=2", "train.lr=0.01", "train.unfreeze=0.5")
    unit = tmp_path / "u"
    summary = train_unit(cfg, table, split, 0, unit, caches=RunCaches(tmp_path / "cache"))
    assert summary["train_devices"] == {"stage2": 2} and summary["epochs_run"] == {"stage1": 0, "stage2": 2}
    folder = UnitFolder(unit)  # unit.json fingerprints every file the unit wrote, as they are now
    assert folder.read_info("train it again").files == record_files(unit, folder.files())
    assert not list(unit.glob("logs/stage2-ddp/*.safetensors"))  # the hand-over files are gone

    val_rows = split.folds[0][1]
    pred = pd.read_csv(UnitFolder(unit).predictions("val"))
    assert pred["path"].tolist() == [table.frame["path"][i] for i in val_rows]
    assert pred["y_true"].tolist() == table.label_indices()[val_rows].tolist()
    proba = pred[["prob_hem", "prob_all"]].to_numpy()
    history = pd.read_csv(UnitFolder(unit).history)
    kept = _kept_row(history, summary["best_stage"])
    assert compute_metrics(pred["y_true"].to_numpy(), proba)["accuracy"] == pytest.approx(kept["val_accuracy"], abs=1e-12)
    assert summary["train_metrics"]["epoch"] == kept["epoch"]

    one = cfg.model_copy(deep=True)
    one.train.devices = 1
    ctx = unit_context(one, table, split, 0, tmp_path / "logs", None)
    load_weights(ctx.model, unit / "weights.safetensors")
    again = predict_rows(ctx, StageResult("stage2", [], None, None, None, image_inputs(ctx, False)), val_rows)
    assert np.abs(again - proba).max() < 1e-6


@pytest.mark.slow
def test_two_processes_train_like_one_device_on_the_same_global_batches(setup, synth_root, tmp_path):
    """Stage 1 on images (frozen BatchNorm, no augmentation, no dropout, no class weights): two
    ranks with 8 images each per step average to the gradient of one device's 16, so the
    histories and predictions agree. (With BatchNorm training, augmentation or class weights
    the per-rank statistics and draws differ: close, not equal, and not claimed.)"""
    table, split = setup
    results = {}
    for devices in (1, 2):
        cfg = tiny_config(synth_root / "training_data", f"train.devices={devices}", "train.stage1.epochs=2",
                          "train.stage2=null", "train.feature_cache=false", "train.class_weights=none",
                          "data.augment=none", "train.lr=0.01")
        folder = tmp_path / f"devices={devices}"
        summary = train_unit(cfg, table, split, 0, folder, caches=RunCaches(tmp_path / "cache"))
        assert summary["train_devices"] == {"stage1": devices}
        results[devices] = [pd.read_csv(folder / f) for f in ("history.csv", "predictions_val.csv", "predictions_test.csv")]
    (h1, *p1), (h2, *p2) = results[1], results[2]
    for col in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc"):
        assert np.allclose(h1[col], h2[col], atol=1e-6), (col, h1[col].tolist(), h2[col].tolist())
    for a, b in zip(p1, p2):
        assert a["path"].tolist() == b["path"].tolist()
        assert np.allclose(a[["prob_hem", "prob_all"]], b[["prob_hem", "prob_all"]], atol=1e-6)


@pytest.mark.slow
def test_a_failing_rank_stops_the_stage_with_its_error(setup, synth_root, tmp_path):
    from dataclasses import replace

    from allwen.training.distributed import fit_distributed
    from allwen.training.stages import image_inputs
    from allwen.training.unit import unit_context

    table, split = setup
    cfg = tiny_config(synth_root / "training_data", "train.devices=2", "train.stage1.epochs=1", "train.stage2=null",
                      "train.feature_cache=false")
    ctx = unit_context(cfg, table, split, 0, tmp_path / "logs", None)
    inputs = replace(image_inputs(ctx, False), kind="frozen_part")  # the ranks will build images: they refuse
    with pytest.raises(RuntimeError, match="DDP rank . of stage1-ddp exited with code 1: .*built images inputs"):
        fit_distributed(ctx, "stage1", cfg.train.stage1, inputs, None)


@pytest.mark.slow
def test_an_epoch_grid_gets_each_counts_snapshot_from_rank_0(setup, synth_root, tmp_path):
    """keep: last over epoch counts 1 and 2, one DDP training: each unit's validation
    probabilities are its own count's (the snapshot rank 0 handed back), as history.csv says."""
    from allwen.training.unit import train_epoch_grid

    table, split = setup
    base = ("train.devices=2", "train.keep=last", "train.stage1.epochs=0", "train.lr=0.01", "train.unfreeze=0.5")
    targets = [(tiny_config(synth_root / "training_data", *base, f"train.stage2.epochs={n}"), tmp_path / f"e{n}" / "fold_0")
               for n in (1, 2)]
    summaries = train_epoch_grid(targets, table, split, 0, RunCaches(tmp_path / "cache"))
    assert [s["train_devices"] for s in summaries] == [{"stage2": 2}] * 2
    probas = []
    for (_, folder), n in zip(targets, (1, 2)):
        history = pd.read_csv(UnitFolder(folder).history)
        assert history["stage"].tolist() == ["stage2"] * n
        pred = pd.read_csv(UnitFolder(folder).predictions("val"))
        probas.append(pred[["prob_hem", "prob_all"]].to_numpy())
        accuracy = compute_metrics(pred["y_true"].to_numpy(), probas[-1])["accuracy"]
        assert accuracy == pytest.approx(history["val_accuracy"].iloc[-1], abs=1e-12)
    assert np.abs(probas[0] - probas[1]).max() > 1e-4  # two models, not one saved twice


def _children(pid: int) -> list[int]:
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
def test_ranks_exit_when_the_unit_process_is_killed(synth_root, tmp_path):
    """kill -9 of the process training a unit: its DDP ranks do not train on for nobody."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import allwen

    unit = tmp_path / "u"
    script = tmp_path / "unit.py"
    script.write_text(
        "from pathlib import Path\n"
        "from allwen.config import load_config\nfrom allwen.data import load_source\n"
        "from allwen.data.splits import make_split\nfrom allwen.training.unit import train_unit\n"
        f"cfg = load_config('demo', ['data.path={synth_root / 'training_data'}', 'data.image_size=32', 'split.folds=2',\n"
        "    'split.test=0.25', 'train.batch_size=16', 'data.num_workers=0', 'scenarios={}', 'train.devices=2',\n"
        "    'train.stage1.epochs=0', 'train.stage2.epochs=500', 'train.stage2.patience=null'])\n"
        "table = load_source(cfg.data.path)\n"
        f"train_unit(cfg, table, make_split(table, cfg.split), 0, Path('{unit}'), None)\n"
    )
    source = str(Path(allwen.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    ranks: list[int] = []
    try:
        progress = unit / "logs" / "stage2-ddp" / "progress.jsonl"
        deadline = time.time() + 240
        while not progress.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert progress.exists(), "the ranks never finished an epoch"
        ranks = _children(proc.pid)
        assert len(ranks) == 2 and all(_running(r) for r in ranks)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 20
        while any(_running(r) for r in ranks) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(_running(r) for r in ranks)
    finally:
        for pid in [proc.pid] + ranks:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
