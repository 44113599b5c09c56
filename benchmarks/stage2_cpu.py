"""Benchmark: one stage-2 unit (fine-tune MobileNetV2's top blocks) on CPU, timed, against stage 1.

Takes a finished stage-1 run of ``taleqani_4class`` (its config, split and first scenario, the
MobileNetV2 one) and trains fold ``--fold`` again with stage 2 on: the L-BFGS head, then
``--epochs`` of Adam on the top ``--unfreeze-blocks`` blocks, fed from the frozen-part cache
(``train.stage2_cache``; the preset has no augmentation, so every input is deterministic). The
unit starts from an empty cache folder, so its seconds include decoding the images, caching the
pooled features and the frozen part's output. Prints the unit's seconds and, for the same fold,
stage 1's and stage 2's best validation accuracy and the kept model's test accuracy beside the
stage-1 run's unit (which must have the same stage-1 validation score: the same head).

    python benchmarks/stage2_cpu.py runs/taleqani_4class --out runs/stage2_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from allwen.config import expand_scenarios
from allwen.data import load_source
from allwen.data.splits import load_split
from allwen.evaluation.metrics import compute_metrics
from allwen.pipeline import load_run_config
from allwen.runfolder import RunFolder
from allwen.training.unit import RunCaches, train_unit


def test_accuracy(unit_dir: Path) -> float:
    pred = pd.read_csv(unit_dir / "predictions_test.csv")
    return compute_metrics(pred["y_true"].to_numpy(), pred[[c for c in pred if c.startswith("prob_")]].to_numpy())["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished stage-1 run of taleqani_4class")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the unit and its caches")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--unfreeze-blocks", type=int, default=3)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder (the timing starts from empty caches)")
    run_cfg = load_run_config(args.run)
    scenario, cfg = expand_scenarios(run_cfg)[0]
    cfg.train.stage2 = cfg.train.stage1.model_copy(update={"solver": "adam", "epochs": args.epochs, "patience": args.patience})
    cfg.train.unfreeze_blocks, cfg.train.stage2_cache, cfg.evaluation.tta = args.unfreeze_blocks, True, False
    table = load_source(cfg.data.path, cfg.data.source, cfg.data.view)
    audit = json.loads((args.run / "data" / "audit.json").read_text())
    if audit["unreadable"]:
        table = table.subset(~table.frame["path"].isin(set(audit["unreadable"])))
    split = load_split(RunFolder(args.run), table)
    start = time.perf_counter()
    summary = train_unit(cfg, table, split, args.fold, args.out / "unit", RunCaches(args.out / "cache"))
    seconds = time.perf_counter() - start
    hist = pd.read_csv(args.out / "unit" / "history.csv")
    stage1_unit = args.run / "units" / scenario / f"fold_{args.fold}"
    stage1_summary = json.loads((stage1_unit / "unit.json").read_text())
    result = {
        "benchmark": "stage2_cpu", "scenario": scenario, "fold": args.fold, "device": "cpu",
        "torch_threads": torch.get_num_threads(), "n_train": summary["n_train"], "n_val": summary["n_val"],
        "n_test": summary["n_test"], "unfrozen_blocks": summary["unfrozen_blocks"],
        "stage2_cache": summary["stage2_cache"], "unit_seconds": round(seconds, 1),
        "stage2_epochs_run": summary["epochs_run"]["stage2"],
        "stage2_epoch_seconds": [round(s, 1) for s in hist.loc[hist["stage"] == "stage2", "seconds"]],
        "best_stage": summary["best_stage"],
        "val_accuracy_stage1": round(float(hist.loc[hist["stage"] == "stage1", "val_accuracy"].max()), 4),
        "val_accuracy_stage2_best_epoch": round(float(hist.loc[hist["stage"] == "stage2", "val_accuracy"].max()), 4),
        "val_accuracy_stage1_run": round(float(stage1_summary["best_val_score"]), 4),
        "test_accuracy_kept_model": round(test_accuracy(args.out / "unit"), 4),
        "test_accuracy_stage1_run": round(test_accuracy(stage1_unit), 4),
    }
    print(json.dumps(result, indent=1))
    return 0 if np.isclose(result["val_accuracy_stage1"], result["val_accuracy_stage1_run"]) else 1


if __name__ == "__main__":
    sys.exit(main())
