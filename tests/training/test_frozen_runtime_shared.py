"""Slow: taleqani_4class stage 1 on a subset of the real images, frozen_runtime torch vs auto.

The frozen features (1 view and the 8 TTA views, both backbones) agree to 1e-4 for every
image; with an Adam-trained head and with the preset's L-BFGS head (solved to its optimum in
float64, L2 chosen on validation) every validation, test and TTA probability does too, and both
runtimes choose the same L2 (the full preset: docs/speed.md).
"""

import json

import numpy as np
import pandas as pd
import pytest

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training.runner import run_grid
from allwen.runfolder import UnitFolder
from allwen.runfolder import RunFolder

pytestmark = pytest.mark.slow
pytest.importorskip("onnxruntime")


def _features(cache):
    out = {}
    for index in sorted((cache / "features").glob("*.json")):
        meta = json.loads(index.read_text())
        values = np.load(cache / "features" / meta["file"])
        out[index.stem] = dict(zip(meta["keys"], values))
    return out


def _probabilities(out):
    units = [u.path for u in RunFolder(out).units_on_disk()]
    return {f"{u.parent.name}/{u.name}/{name}": pd.read_csv(u / name).filter(like="prob_").to_numpy()
            for u in units for name in ("predictions_val.csv", "predictions_test.csv", "predictions_test_tta.csv")}


def test_taleqani_4class_stage1_torch_and_auto_agree_to_1e4(shared, tmp_path):
    data = shared("data", "taleqani")
    weights = shared("weights")
    full = load_source(data, "taleqani")
    subset = full.frame.sort_values("path").groupby("label").head(12)
    manifest = tmp_path / "subset.csv"
    subset[["path", "label"]].to_csv(manifest, index=False)  # 48 images, 12 per class
    scenarios = ("scenarios={model: [{backbone: mobilenetv2_100, weights: "
                 f"{weights / 'mobilenetv2_100' / 'mobilenetv2_100.safetensors'}}}, {{backbone: tf_efficientnet_lite0, "
                 f"weights: {weights / 'tf_efficientnet_lite0' / 'tf_efficientnet_lite0.safetensors'}}}]}}")
    probabilities, features, kept = {}, {}, {}
    for solver in ("adam", "lbfgs"):
        for runtime in ("torch", "auto"):
            head = ["train.stage1={epochs: 3, patience: null}"] if solver == "adam" else []
            cfg = load_config("taleqani_4class", [f"data.path={manifest}", "data.source=csv", "split.folds=2",
                                                   "split.group_by=image",  # a CSV subset has no sequences
                                                   "train.stage2=null", scenarios, f"train.frozen_runtime={runtime}",
                                                   *head])
            table = load_source(cfg.data.path, cfg.data.source)
            out = tmp_path / f"{solver}-{runtime}"
            run_grid(cfg, table, make_split(table, cfg.split), out, quiet=True, cache_dir=tmp_path / f"cache-{runtime}")
            for unit in (u.path for u in RunFolder(out).units_on_disk()):
                info = json.loads(UnitFolder(unit).info_path.read_text())
                assert info["frozen_runtime"] == {"stage1": "torch" if runtime == "torch" else "onnxruntime"}
                kept[solver, runtime, unit.parent.name, unit.name] = info["train_metrics"]["epoch"]  # lbfgs: the L2
            probabilities[solver, runtime] = _probabilities(out)
            features[runtime] = _features(tmp_path / f"cache-{runtime}")
    # every image's cached features: 2 backbones x (1 view, 8 TTA views), the runtime in the key
    assert len(features["torch"]) == len(features["auto"]) == 4
    worst_feature = 0.0
    for store in features["torch"].values():  # its twin: the same shape, the nearest values
        twins = [other for other in features["auto"].values()
                 if other.keys() == store.keys() and next(iter(other.values())).shape == next(iter(store.values())).shape]
        worst_feature = max(worst_feature, min(max(float(np.abs(v - twin[k]).max()) for k, v in store.items())
                                               for twin in twins))
    print(f"largest feature difference, torch vs onnxruntime: {worst_feature:.2g}")
    assert 0 < worst_feature < 1e-4
    for solver in ("adam", "lbfgs"):
        a, b = probabilities[solver, "torch"], probabilities[solver, "auto"]
        assert a.keys() == b.keys() and len(a) == 12
        worst = max(np.abs(a[k] - b[k]).max() for k in a)
        print(f"{solver} head: largest probability difference, torch vs auto: {worst:.2g}")
        assert worst < 1e-4, (solver, worst)
        assert {k[2:]: v for k, v in kept.items() if k[:2] == (solver, "torch")} == \
            {k[2:]: v for k, v in kept.items() if k[:2] == (solver, "auto")}
