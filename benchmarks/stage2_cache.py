"""Benchmark: one stage-2 epoch with and without the frozen-part cache, in one run.

MobileNetV2 with the ../shared weights on the Taleqani images (4 classes) at 224 px, stage 2
only (upper 30% of the blocks trainable), no augmentation so that stage 2's inputs are
deterministic. The same unit is trained three times: images through the whole network in
PyTorch; images with the frozen lower blocks in the frozen runtime (``--runtime``, default
auto: ONNX Runtime on CPU) and the top in PyTorch; the unfrozen top on the cached output of
the frozen lower blocks (the cache filled by the runtime). It prints each epoch's seconds
(training + validation, from history.csv), the ratios, the whole unit's seconds (the cached one
includes filling the cache, once per run), and the largest difference in validation loss and
probabilities from the first.

    python benchmarks/stage2_cache.py --json [--limit 500]
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--runtime", default="auto", help="train.frozen_runtime of the second and third unit")
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
        runtimes = {}
        for name, cached, runtime in (("torch", False, "torch"), ("runtime", False, args.runtime),
                                      ("cached", True, args.runtime)):
            cfg.train.stage2_cache, cfg.train.frozen_runtime = cached, runtime
            folder = Path(tmp) / name
            start = time.perf_counter()
            summary = train_unit(cfg, table, split, 0, folder, caches)
            total[name] = time.perf_counter() - start
            assert summary["stage2_cache"] is cached
            runtimes[name] = summary["frozen_runtime"]["stage2"]
            hist = pd.read_csv(folder / "history.csv")
            epoch[name] = float(hist["seconds"].iloc[0])
            frames[name] = (hist, pd.read_csv(folder / "predictions_val.csv"))
    h0, p0 = frames["torch"]
    cols = [c for c in p0 if c.startswith("prob_")]
    result = {
        "benchmark": "stage2_cache", "data": f"Taleqani (../shared), {len(table)} images, 4 classes",
        "backbone": "mobilenetv2_100 (../shared weights)", "image_size": args.image_size,
        "n_train": int(summary["n_train"]), "n_val": int(summary["n_val"]), "unfrozen_blocks": summary["unfrozen_blocks"],
        "device": "cpu", "torch_threads": torch.get_num_threads(), "load_average": [round(v, 2) for v in os.getloadavg()],
        "frozen_runtime": runtimes,
        "epoch_seconds_uncached": round(epoch["torch"], 2), "epoch_seconds_uncached_runtime": round(epoch["runtime"], 2),
        "epoch_seconds_cached": round(epoch["cached"], 2),
        "ratio": round(epoch["torch"] / epoch["cached"], 2),
        "ratio_runtime_uncached": round(epoch["torch"] / epoch["runtime"], 2),
        "unit_seconds_uncached": round(total["torch"], 2), "unit_seconds_uncached_runtime": round(total["runtime"], 2),
        "unit_seconds_cached_incl_fill": round(total["cached"], 2),
        **{f"max_abs_diff_val_loss_{k}": float(abs(h0["val_loss"] - frames[k][0]["val_loss"]).max()) for k in ("runtime", "cached")},
        **{f"max_abs_diff_val_probabilities_{k}": float(np.abs(p0[cols].to_numpy() - frames[k][1][cols].to_numpy()).max())
           for k in ("runtime", "cached")},
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
