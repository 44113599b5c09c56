"""Grid runs: every unit writes its files; a run killed mid-way resumes to the same result."""

from pathlib import Path

import pandas as pd
import pytest

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training import progress as progress_module
from allwen.training.runner import run_grid

UNIT_FILES = ["weights.safetensors", "data_config.json", "history.csv", "curves.png",
              "predictions_val.csv", "predictions_test.csv", "unit.json"]


def grid_config(data_path):
    return load_config("demo", [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.25",
        "train.stage1.epochs=1", "train.stage2.epochs=1", "train.batch_size=16",
        "scenarios={train.lr: [0.01, 0.001]}",
    ])


def _files(run: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted(run.glob("units/*/fold_*/*.csv")):
        frame = pd.read_csv(path)
        out[str(path.relative_to(run))] = frame.drop(columns=["seconds"], errors="ignore")
    return out


@pytest.mark.slow  # tests/reliability/test_kill_resume.py kills real processes at every phase in the default suite
def test_killed_run_resumes_to_the_same_files_and_metrics(synth_root, tmp_path, monkeypatch):
    cfg = grid_config(synth_root / "training_data")
    table = load_source(cfg.data.path)
    split = make_split(table, cfg.split)

    run_grid(cfg, table, split, tmp_path / "straight", quiet=True)

    original_epoch = progress_module.GridProgress.epoch

    def dying_epoch(self, stage, epoch, max_epochs, metrics):
        if self.unit_label.startswith("unit 2/") and stage == "stage2":
            raise RuntimeError("simulated crash in the second unit")
        return original_epoch(self, stage, epoch, max_epochs, metrics)

    monkeypatch.setattr(progress_module.GridProgress, "epoch", dying_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_grid(cfg, table, split, tmp_path / "resumed", quiet=True)
    resumed = tmp_path / "resumed"
    assert (resumed / "units/lr=0.01/fold_0/unit.json").exists()
    assert not (resumed / "units/lr=0.01/fold_1/unit.json").exists()  # the killed unit is unfinished
    first_unit_time = (resumed / "units/lr=0.01/fold_0/unit.json").stat().st_mtime_ns
    monkeypatch.setattr(progress_module.GridProgress, "epoch", original_epoch)
    run_grid(cfg, table, split, resumed, quiet=True)
    assert (resumed / "units/lr=0.01/fold_0/unit.json").stat().st_mtime_ns == first_unit_time  # skipped

    for unit in ("lr=0.01/fold_0", "lr=0.01/fold_1", "lr=0.001/fold_0", "lr=0.001/fold_1"):
        for name in UNIT_FILES:
            assert (resumed / "units" / unit / name).exists(), (unit, name)
    straight, again = _files(tmp_path / "straight"), _files(resumed)
    assert straight.keys() == again.keys() and len(straight) == 12
    for key in straight:
        pd.testing.assert_frame_equal(straight[key], again[key], check_exact=False, rtol=0, atol=1e-7, obj=key)
