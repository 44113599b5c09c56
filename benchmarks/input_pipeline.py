"""Benchmark: images per second of the per-epoch PIL path vs the decoded-image cache (CPU).

One training epoch's input pipeline, measured in one run on the same images: (a) per image
PIL decode -> resize (-> CLAHE) -> augment -> normalise, as every epoch did before the cache;
(b) uint8 rows read from the memory-mapped decoded store -> torchvision v2 augmentation image
by image -> normalise per batch (the store before batched augmentation); (c) the same rows ->
batched augmentation, a draw per image (:mod:`allwen.data.batch_augment`; ``flips_color`` on
CPU: one lookup table per image and channel with the normalisation folded in) -> normalise, as
training runs now. All in the main process (num_workers 0), batch size 32, same augmentation
distribution; ``ratio`` is (c) over (a). The one-time cost of filling the store is printed too.

    python benchmarks/input_pipeline.py --json                 # ../shared Taleqani at 224 px if present
    python benchmarks/input_pipeline.py --json --synthetic     # generated cells
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
import torch
from torch.utils.data import DataLoader

from allwen.config.schema import DataConfig
from allwen.data import load_source
from allwen.data.transforms import ImageDataset, build_transform
from allwen.training.inputs import BatchPrep, DecodedImages, ImageRows

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}  # mobilenetv2_100


def _rate(loader: DataLoader, prep: BatchPrep | None) -> float:
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        if prep is not None:
            x = prep(x)
        n += len(x)
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--augment", default="flips_color")
    parser.add_argument("--clahe", action="store_true")
    parser.add_argument("--limit", type=int, default=1000, help="images (0 = all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = SHARED / "data" / "taleqani"
        if args.synthetic or not data_dir.exists():
            from allwen.data.synth import generate_cnmc

            generate_cnmc(Path(tmp) / "s", n_all_subjects=10, n_hem_subjects=8, cells_per_subject=40, image_size=450)
            table, what = load_source(Path(tmp) / "s" / "C-NMC_Leukemia" / "training_data"), "synthetic cells, 450 px files"
        else:
            table, what = load_source(data_dir, "taleqani"), "Taleqani (../shared), JPEG files"
        frame = table.frame.sample(frac=1.0, random_state=0)
        if args.limit:
            frame = frame.head(args.limit)
        paths, hashes = list(frame.path), list(frame.sha256)
        labels = np.zeros(len(paths), dtype=np.int64)
        data = DataConfig(image_size=args.image_size, augment=args.augment, clahe=args.clahe)

        today = DataLoader(ImageDataset(paths, labels, build_transform(data, NORM, train=True)), batch_size=32)
        pil_rate = _rate(today, None)

        start = time.perf_counter()
        store = DecodedImages(Path(tmp) / "decoded", data, NORM)
        store.ensure(paths, hashes)
        fill_seconds = time.perf_counter() - start
        cached = DataLoader(ImageRows(labels, stored=store.source(hashes)), batch_size=32, shuffle=True)
        per_image_rate = _rate(cached, BatchPrep(data, NORM, augment=True, batched=False))
        cache_rate = _rate(cached, BatchPrep(data, NORM, augment=True))
    result = {
        "benchmark": "input_pipeline", "data": what, "images": len(paths), "image_size": args.image_size,
        "augment": args.augment, "clahe": args.clahe, "device": "cpu", "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "pil_per_epoch_images_per_s": round(pil_rate, 1),
        "decoded_cache_per_image_augment_images_per_s": round(per_image_rate, 1),
        "decoded_cache_images_per_s": round(cache_rate, 1),
        "ratio_per_image_augment": round(per_image_rate / pil_rate, 2),
        "ratio": round(cache_rate / pil_rate, 2), "store_fill_seconds_once_per_run": round(fill_seconds, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
