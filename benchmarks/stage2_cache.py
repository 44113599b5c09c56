"""Benchmark: one stage-2 epoch with and without the frozen-part cache, in one run.

MobileNetV2 with the ../shared weights on the Taleqani images (4 classes) at 224 px, stage 2
only (upper 30% of the blocks trainable), no augmentation so that stage 2's inputs are
deterministic. The same unit is trained twice, images through the whole network, then the
unfrozen top on the cached output of the frozen lower blocks; it prints each epoch's seconds
(training + validation, from history.csv), their ratio, the whole unit's seconds (the cached one
includes filling the cache, once per run), and the largest difference in validation loss and probabilities.

    python benchmarks/stage2_cache.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.splits import make_split
from allwen.training.unit import RunCaches, train_unit

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=0, help="use this many images (0 = all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    weights = SHARED / "weights" / "mobilenetv2_100" / "mobilenetv2_100.safetensors"
    data_dir = SHARED / "data" / "taleqani"
    if not (weights.exists() and data_dir.exists()):
        print(f"skipped: needs {weights} and {data_dir}", file=sys.stderr)
        return 0
    cfg = load_config("preset:demo", [
        "data.source=taleqani", f"data.path={data_dir}", "data.view=native", f"data.image_size={args.image_size}",
        "data.augment=none", "data.num_workers=0", "model.backbone=mobilenetv2_100", f"model.weights={weights}",
        "model.head=softmax", "split.group_by=image", "split.folds=1", "split.test=0.2",
        "train.stage1.epochs=0", "train.stage2.epochs=1", "train.stage2.patience=null", "train.unfreeze=0.3",
        "train.batch_size=32", "train.lr=0.0001", "scenarios={}",
    ])
    table = load_source(cfg.data.path, cfg.data.source, cfg.data.view)
    if args.limit:
        table = table.subset(np.isin(np.arange(len(table)), np.random.default_rng(0).permutation(len(table))[: args.limit]))
    split = make_split(table, cfg.split)
    epoch, total, frames = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        caches = RunCaches(Path(tmp) / "cache")
        for cached in (False, True):
            cfg.train.stage2_cache = cached
            folder = Path(tmp) / f"cached={cached}"
            start = time.perf_counter()
            summary = train_unit(cfg, table, split, 0, folder, caches)
            total[cached] = time.perf_counter() - start
            assert summary["stage2_cache"] is cached
            hist = pd.read_csv(folder / "history.csv")
            epoch[cached] = float(hist["seconds"].iloc[0])
            frames[cached] = (hist, pd.read_csv(folder / "predictions_val.csv"))
    (h0, p0), (h1, p1) = frames[False], frames[True]
    cols = [c for c in p0 if c.startswith("prob_")]
    result = {
        "benchmark": "stage2_cache", "data": f"Taleqani (../shared), {len(table)} images, 4 classes",
        "backbone": "mobilenetv2_100 (../shared weights)", "image_size": args.image_size,
        "n_train": int(summary["n_train"]), "n_val": int(summary["n_val"]), "unfrozen_blocks": summary["unfrozen_blocks"],
        "device": "cpu", "torch_threads": torch.get_num_threads(),
        "epoch_seconds_uncached": round(epoch[False], 2), "epoch_seconds_cached": round(epoch[True], 2),
        "ratio": round(epoch[False] / epoch[True], 2),
        "unit_seconds_uncached": round(total[False], 2), "unit_seconds_cached_incl_fill": round(total[True], 2),
        "max_abs_diff_val_loss": float(abs(h0["val_loss"] - h1["val_loss"]).max()),
        "max_abs_diff_val_probabilities": float(np.abs(p0[cols].to_numpy() - p1[cols].to_numpy()).max()),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
