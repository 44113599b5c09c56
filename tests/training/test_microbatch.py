"""Out of GPU memory at a training step: the micro-batch halves, gradients accumulate, the
optimiser sees the configured batch and the unit's numbers stay the same (on CPU, the error
injected with ``ALLWEN_OOM_ABOVE``)."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.runfolder import UnitFolder
from allwen.training.microbatch import accumulate, chunk_weights, is_oom
from allwen.training.unit import RunCaches, train_unit


def test_accumulated_micro_batches_give_the_whole_batch_gradient_with_class_weights():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 2)
    x, y = torch.randn(10, 5), torch.tensor([0, 1, 1, 1, 0, 1, 1, 1, 1, 0])
    weights = torch.tensor([2.5, 0.7])

    def loss_fn(logits, targets, w):
        return torch.nn.functional.cross_entropy(logits, targets, weight=w)

    loss_fn(layer(x), y, weights).backward()
    whole = layer.weight.grad.clone()
    layer.zero_grad()
    last, value, logits = accumulate(layer, loss_fn, x, y, 4, weights)  # parts of 3, 3, 3, 1 rows
    last.backward()
    torch.testing.assert_close(layer.weight.grad, whole, rtol=0, atol=1e-6)
    assert abs(float(value) - float(loss_fn(layer(x), y, weights))) < 1e-6 and logits.shape == (10, 2)
    assert [s.stop - s.start for s, _ in chunk_weights(y, 4, weights)] == [3, 3, 3, 1]
    assert is_oom(torch.cuda.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA out of memory.")) \
        and not is_oom(ValueError("out of memory"))


def _unit(cfg, table, split, folder):
    return train_unit(cfg, table, split, 0, folder, RunCaches(folder.parent / "cache"))


def test_an_oom_at_the_step_halves_the_micro_batch_keeps_the_batch_and_the_result(synth_root, tmp_path, monkeypatch,
                                                                                   caplog):
    # stage 1 on the frozen backbone's cached features: no layer whose output depends on the batch
    cfg = load_config("demo", [f"data.path={synth_root / 'training_data'}", "data.image_size=32", "split.folds=2",
                               "split.test=0.25", "train.stage1.epochs=2", "train.stage1.patience=null",
                               "train.stage2=null", "train.batch_size=16", "scenarios={}", "data.num_workers=0"])
    table = load_source(cfg.data.path)
    split = make_split(table, cfg.split)
    plain = _unit(cfg, table, split, tmp_path / "plain" / "fold_0")
    monkeypatch.setenv("ALLWEN_OOM_ABOVE", "5")  # a "GPU" that holds 5 images: 16 -> 8 -> 4
    with caplog.at_level(logging.WARNING, logger="allwen.training.microbatch"):
        small = _unit(cfg, table, split, tmp_path / "small" / "fold_0")
    said = [r for r in caplog.records if "out of GPU memory" in r.getMessage()]
    assert len(said) == 2 and "batches of 16" in said[0].getMessage()  # once per halving, not per step
    assert plain["micro_batch"] == {} and small["micro_batch"] == {"stage1": 4}
    assert plain["threads"] == small["threads"] == torch.get_num_threads()  # unit.json records the count
    assert UnitFolder(tmp_path / "small" / "fold_0").read_info("").micro_batch == {"stage1": 4}
    for name in ("predictions_val.csv", "predictions_test.csv"):
        a = pd.read_csv(tmp_path / "plain" / "fold_0" / name)
        b = pd.read_csv(tmp_path / "small" / "fold_0" / name)
        cols = [c for c in a if c.startswith("prob")]
        np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=0, atol=1e-5, err_msg=name)
    # the optimiser saw the configured batch: as many steps per epoch
    assert len(pd.read_csv(UnitFolder(tmp_path / "small" / "fold_0").history)) == 2


def test_an_image_that_does_not_fit_alone_is_an_error(synth_root, tmp_path, monkeypatch):
    cfg = load_config("demo", [f"data.path={synth_root / 'training_data'}", "data.image_size=32", "split.folds=2",
                               "split.test=0.25", "train.stage1.epochs=1", "train.stage2=null", "train.batch_size=4",
                               "scenarios={}", "data.num_workers=0"])
    table = load_source(cfg.data.path)
    monkeypatch.setenv("ALLWEN_OOM_ABOVE", "0")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _unit(cfg, table, make_split(table, cfg.split), tmp_path / "u" / "fold_0")
