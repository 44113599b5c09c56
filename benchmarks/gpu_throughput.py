"""Benchmark: training images per second on a GPU, allwen's unit vs a minimal timm loop.

``tf_efficientnetv2_m`` (random init: throughput does not depend on the weights) at 384 and
450 px, stage 2 as the studies run it (upper 30% of the blocks trainable, flips + colour
augmentation, bf16 autocast, channels_last), on synthetic cells. (a) allwen: ``train_unit``
with stage 1 skipped and one stage-2 epoch; images/s = training images / the epoch's seconds
(history.csv; the epoch includes validation, so this is a lower bound). (b) the same model in
a minimal PyTorch loop (uint8 batches in memory, flips on the GPU, bf16 autocast, Adam), no
validation. Prints both and the ratio. Without CUDA it prints why and exits 0.

    python benchmarks/gpu_throughput.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def minimal_loop(size: int, batch: int, steps: int) -> float:
    """Images/s of a bare timm + PyTorch training loop on random uint8 batches."""
    import timm
    import torch

    model = timm.create_model("tf_efficientnetv2_m", pretrained=False, num_classes=2).cuda()
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    torch.backends.cudnn.benchmark = True
    images = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, device="cuda")
    labels = torch.randint(0, 2, (batch,), device="cuda")
    mean = torch.tensor([0.5, 0.5, 0.5], device="cuda").view(1, 3, 1, 1)

    def step() -> None:
        x = images.flip(-1).float().div(255).sub(mean).div(0.5).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def allwen_unit(size: int, batch: int, n_images: int, tmp: Path) -> float:
    import pandas as pd

    from allwen.config import load_config
    from allwen.data import load_source
    from allwen.data.splits import make_split
    from allwen.data.synth import generate_cnmc
    from allwen.training.unit import RunCaches, train_unit

    root = tmp / "synth"
    if not root.exists():
        generate_cnmc(root, n_all_subjects=10, n_hem_subjects=10, cells_per_subject=max(2, n_images // 20), image_size=450)
    cfg = load_config("preset:experiment_a", [
        f"data.path={root / 'C-NMC_Leukemia' / 'training_data'}", f"data.image_size={size}", "model.weights=none",
        "split.folds=1", "split.test=0.1", "split.group_by=image", "train.stage1.epochs=0", "train.stage2.epochs=1",
        "train.stage2.patience=null", f"train.batch_size={batch}", "scenarios={}",
    ])
    table = load_source(cfg.data.path, cfg.data.source)
    split = make_split(table, cfg.split)
    out = tmp / f"unit-{size}"
    summary = train_unit(cfg, table, split, 0, out, RunCaches(tmp / "cache"))
    seconds = float(pd.read_csv(out / "history.csv")["seconds"].iloc[0])
    return summary["n_train"] / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 450])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=2000, help="synthetic cells for allwen's unit")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the minimal loop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device; this benchmark measures GPU training throughput", file=sys.stderr)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            ours = allwen_unit(size, args.batch_size, args.images, Path(tmp))
            bare = minimal_loop(size, args.batch_size, args.steps)
            rows.append({"image_size": size, "allwen_images_per_s": round(ours, 1),
                         "minimal_loop_images_per_s": round(bare, 1), "ratio_allwen_to_minimal": round(ours / bare, 3)})
    result = {"benchmark": "gpu_throughput", "backbone": "tf_efficientnetv2_m", "device": torch.cuda.get_device_name(0),
              "batch_size": args.batch_size, "results": rows}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
