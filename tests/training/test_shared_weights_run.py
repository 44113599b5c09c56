"""Slow: real ImageNet MobileNetV2 weights from ../shared on real Taleqani images (CPU)."""

import json
import time

import pytest

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.io import record_files
from allwen.runfolder import UnitFolder
from allwen.training.runner import run_grid
from allwen.runfolder import RunFolder

pytestmark = pytest.mark.slow


def test_three_scenarios_two_folds_on_taleqani_with_mobilenetv2(shared, tmp_path):
    weights = shared("weights", "mobilenetv2_100", "mobilenetv2_100.safetensors")
    data = shared("data", "taleqani")
    cfg = load_config("taleqani_binary", [
        f"data.path={data}", f"model.weights={weights}", "data.image_size=64", "split.folds=2",
        "train.stage1.epochs=2", "train.stage2.epochs=1", "scenarios={train.lr: [0.001, 0.0001, 0.00001]}",
    ])
    table = load_source(cfg.data.path, cfg.data.source, cfg.data.view)
    split = make_split(table, cfg.split)
    assert all(r["shared_duplicate_groups"] == 0 for r in split.leakage)
    start = time.perf_counter()
    summaries = run_grid(cfg, table, split, tmp_path, quiet=True)
    seconds = time.perf_counter() - start
    print(f"3 scenarios x 2 folds on {len(table)} Taleqani images: {seconds:.0f} s")
    assert len(summaries) == 6
    for unit in (u.path for u in RunFolder(tmp_path).units_on_disk()):
        folder = UnitFolder(unit)  # unit.json fingerprints every file the unit wrote, as they are now
        assert folder.read_info("train it again").files == record_files(unit, folder.files())
        info = json.loads(UnitFolder(unit).info_path.read_text())
        assert info["feature_cache"] and info["epochs_run"] == {"stage1": 2, "stage2": 1}
    # pretrained features separate Benign from ALL far better than chance after 2 head epochs
    best = max(s["best_val_score"] for s in summaries)
    assert best > 0.8
