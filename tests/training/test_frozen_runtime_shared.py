"""Slow: taleqani_4class stage 1 on a subset of the real images, frozen_runtime torch vs auto."""

import json

import numpy as np
import pandas as pd
import pytest

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training.runner import run_grid

pytestmark = pytest.mark.slow
pytest.importorskip("onnxruntime")


def test_taleqani_4class_stage1_torch_and_auto_agree_to_1e4(shared, tmp_path):
    data = shared("data", "taleqani")
    weights = shared("weights")
    full = load_source(data, "taleqani")
    subset = full.frame.groupby("label", group_keys=False).apply(lambda f: f.sort_values("path").head(12))
    manifest = tmp_path / "subset.csv"
    subset[["path", "label"]].to_csv(manifest, index=False)  # 48 images, 12 per class
    scenarios = ("scenarios={model: [{backbone: mobilenetv2_100, weights: "
                 f"{weights / 'mobilenetv2_100' / 'mobilenetv2_100.safetensors'}}}, {{backbone: tf_efficientnet_lite0, "
                 f"weights: {weights / 'tf_efficientnet_lite0' / 'tf_efficientnet_lite0.safetensors'}}}]}}")
    probabilities = {}
    for runtime in ("torch", "auto"):
        cfg = load_config("taleqani_4class", [f"data.path={manifest}", "data.source=csv", "split.folds=2",
                                               "train.stage2=null", scenarios, f"train.frozen_runtime={runtime}"])
        table = load_source(cfg.data.path, cfg.data.source)
        out = tmp_path / runtime
        run_grid(cfg, table, make_split(table, cfg.split), out, quiet=True)
        units = sorted(out.glob("units/*/fold_*"))
        assert len(units) == 4
        for unit in units:
            info = json.loads((unit / "unit.json").read_text())
            assert info["frozen_runtime"] == {"stage1": "torch" if runtime == "torch" else "onnxruntime"}
        probabilities[runtime] = {
            f"{u.parent.name}/{u.name}/{name}": pd.read_csv(u / name).filter(like="prob_").to_numpy()
            for u in units for name in ("predictions_val.csv", "predictions_test.csv", "predictions_test_tta.csv")}
    assert probabilities["torch"].keys() == probabilities["auto"].keys()
    worst = max(np.abs(probabilities["torch"][k] - probabilities["auto"][k]).max() for k in probabilities["torch"])
    print(f"largest probability difference, torch vs auto: {worst:.2g}")
    assert worst < 1e-4
