"""Grid runs: every unit writes its files; a run killed mid-way resumes to the same result."""

from pathlib import Path

import pandas as pd
import pytest

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training import progress as progress_module
from allwen.runfolder import RunFolder
from allwen.training.runner import run_grid



def assert_same_unit(a: Path, b: Path, name: str) -> None:
    """Unit ``name`` of runs ``a`` and ``b``: the same ``unit.json`` facts, fingerprints of the
    same files, the same normalisation and weights equal within float noise."""
    import json

    import numpy as np
    from PIL import Image
    from safetensors.numpy import load_file

    from allwen.runfolder import RunFolder, parse_unit_name

    scenario, fold = parse_unit_name(name)
    info_a, info_b = (RunFolder(r).unit_info(scenario, fold) for r in (a, b))
    assert (info_a.fold, info_a.best_stage, set(info_a.files)) == (info_b.fold, info_b.best_stage, set(info_b.files))
    ua, ub = (RunFolder(r).unit(scenario, fold) for r in (a, b))
    assert set(info_a.files) == set(ua.files())  # unit.json fingerprints every file the unit wrote
    assert json.loads(ua.data_config.read_text()) == json.loads(ub.data_config.read_text())
    wa, wb = load_file(str(ua.weights)), load_file(str(ub.weights))
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], rtol=0, atol=1e-5, err_msg=f"{name}: {key}")
    with Image.open(ua.curves) as ca, Image.open(ub.curves) as cb:
        assert ca.size == cb.size


def grid_config(data_path):
    return load_config("demo", [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.25",
        "train.stage1.epochs=1", "train.stage2.epochs=1", "train.batch_size=16",
        "scenarios={train.lr: [0.01, 0.001]}",
    ])


def _files(run: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted(p for u in RunFolder(run).units_on_disk() for p in u.path.glob("*.csv")):
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
    assert RunFolder(resumed).unit("lr=0.01", 0).info_path.exists()
    assert not RunFolder(resumed).unit("lr=0.01", 1).info_path.exists()  # the killed unit is unfinished
    first_unit_time = RunFolder(resumed).unit("lr=0.01", 0).info_path.stat().st_mtime_ns
    monkeypatch.setattr(progress_module.GridProgress, "epoch", original_epoch)
    run_grid(cfg, table, split, resumed, quiet=True)
    assert RunFolder(resumed).unit("lr=0.01", 0).info_path.stat().st_mtime_ns == first_unit_time  # skipped

    for unit in ("lr=0.01/fold_0", "lr=0.01/fold_1", "lr=0.001/fold_0", "lr=0.001/fold_1"):
        assert_same_unit(tmp_path / "straight", resumed, unit)
    straight, again = _files(tmp_path / "straight"), _files(resumed)
    assert straight.keys() == again.keys() and len(straight) == 12
    for key in straight:
        pd.testing.assert_frame_equal(straight[key], again[key], check_exact=False, rtol=0, atol=1e-7, obj=key)


def test_a_unit_fixes_its_threads_from_the_budget_alike_in_process_and_in_a_worker(monkeypatch):
    """Why Ray once gave other numbers: a sequential unit trained with the machine's threads, a
    Ray task with its CPUs. Now both take the budget (a task's is its CPUs) less loader workers."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from allwen.training.unit import unit_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ALLWEN_THREADS", "2")
        assert unit_threads(load_config("demo", ["data.num_workers=auto"])) == 1 == torch.get_num_threads()
        assert unit_threads(load_config("demo", ["data.num_workers=0"])) == 2 == torch.get_num_threads()
        monkeypatch.setenv("ALLWEN_THREADS", "1")  # what _train_remote sets in a Ray task of 1 CPU
        in_process = unit_threads(load_config("demo", ["data.num_workers=0"])), torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    code = ("import json, torch; from allwen.config import load_config; from allwen.training.unit import unit_threads; "
            "print(json.dumps([unit_threads(load_config('demo', ['data.num_workers=0'])), torch.get_num_threads()]))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert tuple(json.loads(done.stdout.strip().splitlines()[-1])) == in_process == (1, 1)
