"""Benchmark: stage 1 with and without the frozen-backbone feature cache, in one run.

Runs the same grid (scenarios x folds, stage 1 only, same seeds) twice, uncached then cached,
prints both wall times, their ratio and the largest difference in validation metrics. With
``--augmented``: stage 1 on augmented images (``train.stage1.augment: true``, ``flips_color``;
the frozen backbone runs on every augmented batch, in ``train.frozen_runtime``) against the
cached un-augmented stage 1 (``train.stage1.augment: false``), the speed-up the documented
option buys (the two are different protocols, so their metrics differ).

    .venv/bin/python benchmarks/feature_cache.py                      # ../shared Taleqani + MobileNetV2 if present
    .venv/bin/python benchmarks/feature_cache.py --synthetic          # generated cells, tiny backbone
    .venv/bin/python benchmarks/feature_cache.py --augmented          # augmented vs cached stage 1
    .venv/bin/python benchmarks/feature_cache.py --json               # last line: one JSON object
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training.runner import run_grid

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="generated cells + test_efficientnet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--augmented", action="store_true", help="augmented stage 1 vs the cached un-augmented one")
    parser.add_argument("--runtime", default="auto", help="train.frozen_runtime")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object (for tools/ledger.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    weights = SHARED / "weights" / "mobilenetv2_100" / "mobilenetv2_100.safetensors"
    data = SHARED / "data" / "taleqani"
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic or not (weights.exists() and data.exists()):
            from allwen.data.synth import generate_cnmc

            generate_cnmc(Path(tmp) / "synth", n_all_subjects=10, n_hem_subjects=8, cells_per_subject=40, image_size=64)
            base = ["data.source=cnmc", f"data.path={Path(tmp) / 'synth' / 'C-NMC_Leukemia' / 'training_data'}",
                    "model.backbone=test_efficientnet", "model.weights=none", "split.group_by=subject"]
            what = "synthetic cells, test_efficientnet"
        else:
            base = ["data.source=taleqani", f"data.path={data}", "data.view=binary",
                    "model.backbone=mobilenetv2_100", f"model.weights={weights}", "split.group_by=image"]
            what = "Taleqani (../shared, binary), mobilenetv2_100"
        overrides = base + [
            f"data.image_size={args.image_size}", f"split.folds={args.folds}", "split.test=0.2",
            f"train.stage1.epochs={args.epochs}", "train.stage1.patience=null", "train.stage2=null",
            "train.batch_size=32", "scenarios={train.lr: [0.001, 0.0001]}", f"train.frozen_runtime={args.runtime}",
            "data.augment=flips_color",
        ]
        times, histories = {}, {}
        for cached in (False, True):
            variant = (f"train.stage1.augment={str(not cached).lower()}" if args.augmented
                       else f"train.feature_cache={str(cached).lower()}")
            cfg = load_config("preset:demo", overrides + [variant])
            table = load_source(cfg.data.path, cfg.data.source, cfg.data.view)
            split = make_split(table, cfg.split)
            run = Path(tmp) / f"run-cached={cached}"
            start = time.perf_counter()
            run_grid(cfg, table, split, run, quiet=True)
            times[cached] = time.perf_counter() - start
            histories[cached] = pd.concat(
                [pd.read_csv(p).assign(unit=str(p.parent.relative_to(run))) for p in sorted(run.glob("units/*/fold_*/history.csv"))]
            )
    n_units = 2 * args.folds
    cols = ["val_loss", "val_accuracy", "val_f1", "val_kappa", "val_auc"]
    diff = np.abs(histories[False][cols].to_numpy() - histories[True][cols].to_numpy()).max()
    print(f"feature cache benchmark: {what}, {len(table)} images at {args.image_size}px, "
          f"{n_units} units x {args.epochs} stage-1 epochs")
    import os

    print(f"  load average {os.getloadavg()[0]:.1f}; train.frozen_runtime={args.runtime}")
    if args.augmented:
        print(f"  augmented stage 1 (backbone on every batch): {times[False]:.1f} s")
        print(f"  cached un-augmented stage 1 (train.stage1.augment: false): {times[True]:.1f} s")
        print(f"  speed-up of the cached option: {times[False] / times[True]:.2f}x")
    else:
        print(f"  uncached stage 1: {times[False]:.1f} s")
        print(f"  cached stage 1:   {times[True]:.1f} s (one backbone pass per image, shared by all units)")
        print(f"  speed-up: {times[False] / times[True]:.2f}x; largest validation-metric difference: {diff:.2e}")
    if args.json:
        import json

        first = "augmented" if args.augmented else "uncached"
        print(json.dumps({"benchmark": "feature_cache", "data": what, "images": len(table),
                          "image_size": args.image_size, "units": n_units, "epochs": args.epochs,
                          "runtime": args.runtime,
                          "seconds": {first: round(times[False], 1), "cached": round(times[True], 1)},
                          "ratio": round(times[False] / times[True], 2),
                          "max_metric_diff": None if args.augmented else float(f"{diff:.3g}")}))
    return 0 if args.augmented or diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
