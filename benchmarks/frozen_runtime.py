"""Benchmark: stage-1 features (the frozen backbone's pooled output) in torch eager vs each
available frozen runtime (``train.frozen_runtime``), on the same images, in one run.

With ``../shared``: MobileNetV2 and EfficientNet-Lite0 with their ImageNet weights at 224 px on
Taleqani JPEGs; without it (or ``--synthetic``): a tiny timm model on generated cells. Each
runtime gets the part exactly as training does (:func:`allwen.models.runtime.frozen_forward`:
ONNX export, the check against PyTorch, the machine's threads). The runtimes are timed in
alternating rounds, so a load change on a shared machine hits all of them alike. Prints images
per second, the ratio over torch eager and the largest difference from torch over all images;
with ``--json`` the last line is one JSON object (``ratio``: the best f32 runtime over torch on
the first backbone, ``max_diff``: that runtime's largest difference).

    python benchmarks/frozen_runtime.py --json                    # ../shared if present
    python benchmarks/frozen_runtime.py --json --synthetic        # tiny model, generated cells
    python benchmarks/frozen_runtime.py --json --low-precision    # also OpenVINO's lower precision
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

from allwen.config.schema import DataConfig
from allwen.data import load_source
from allwen.data.transforms import decode_transform, normalize_transform, read_image
from allwen.config.schema import ModelConfig
from allwen.models import backbone_data_config, build_classifier, freeze_backbone
from allwen.models.runtime import available, difference, frozen_forward, threads, torch_forward

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0")


def _images(paths: list[str], size: int, norm: dict) -> torch.Tensor:
    data = DataConfig(image_size=size, augment="none")
    decode, normalize = decode_transform(data, norm), normalize_transform(norm)
    return torch.stack([normalize(decode(read_image(p))).as_subclass(torch.Tensor) for p in paths])


def _rate(forward, batches: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    outs = [forward(b) for b in batches]
    return sum(len(b) for b in batches) / (time.perf_counter() - start), torch.cat(outs)


def bench(name: str, weights: str, paths: list[str], size: int, batch: int, rounds: int, low: bool,
          folder: Path) -> dict:
    model = build_classifier(ModelConfig(backbone=name, weights=weights, head="softmax"), 2)
    freeze_backbone(model)  # exactly as stage 1 runs it (frozen BatchNorm); only the backbone is timed
    backbone = model.backbone.eval()
    norm = backbone_data_config(backbone)
    x = _images(paths, size, norm)
    batches = list(torch.split(x, batch))
    runners = {"torch eager": torch_forward(backbone)}
    for runtime in ("onnxruntime", "openvino"):
        if available(runtime):
            runners[runtime] = frozen_forward(backbone, runtime, folder / f"{name}.onnx", x[:4], what=name)
    if low and available("openvino"):
        runners["openvino low precision"] = frozen_forward(backbone, "openvino", folder / f"{name}.onnx", x[:4],
                                                           low_precision=True, what=name)
    for forward in runners.values():
        forward(batches[0])  # warm-up: allocations, graph optimisation
    rates: dict[str, list[float]] = {k: [] for k in runners}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        for label, forward in runners.items():
            rate, outputs[label] = _rate(forward, batches)
            rates[label].append(rate)
    reference = outputs["torch eager"]
    rows = []
    for label, forward in runners.items():
        rate = float(np.mean(rates[label]))
        rows.append({"runtime": label, "ran_in": forward.name, "images_per_s": round(rate, 1),
                     "ratio": round(rate / float(np.mean(rates["torch eager"])), 2),
                     "max_diff": float(f"{difference(reference, outputs[label]):.3g}"),
                     "relative_diff": float(f"{difference(reference, outputs[label], True):.3g}")})
    return {"backbone": name, "weights": "ImageNet" if weights != "none" else "random", "image_size": size,
            "images": len(x), "batch": batch, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="tiny model on generated cells")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds per runtime")
    parser.add_argument("--low-precision", action="store_true", help="also OpenVINO's lower-precision modes")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, weights_dir = SHARED / "data" / "taleqani", SHARED / "weights"
        if args.synthetic or not (data_dir.exists() and weights_dir.exists()):
            from allwen.data.synth import generate_cnmc

            generate_cnmc(Path(tmp) / "s", n_all_subjects=4, n_hem_subjects=4, cells_per_subject=8, image_size=96)
            table = load_source(Path(tmp) / "s" / "C-NMC_Leukemia" / "training_data")
            jobs, size, what = [("test_efficientnet", "none")], 64, "synthetic cells, tiny random model"
        else:
            table = load_source(data_dir, "taleqani")
            jobs = [(n, str(weights_dir / n / f"{n}.safetensors")) for n in BACKBONES]
            size, what = 224, "Taleqani JPEGs (../shared), ImageNet weights"
        paths = list(table.frame.sample(frac=1.0, random_state=0).path)
        paths = [paths[i % len(paths)] for i in range(args.images)]
        results = [bench(n, w, paths, size, args.batch, args.rounds, args.low_precision, Path(tmp)) for n, w in jobs]
    head = results[0]
    exact = [r for r in head["rows"] if r["runtime"] not in ("torch eager", "openvino low precision") and r["ran_in"] != "torch"]
    best = max(exact, key=lambda r: r["ratio"]) if exact else head["rows"][0]
    summary = {
        "benchmark": "frozen_runtime", "data": what, "device": "cpu", "torch_threads": torch.get_num_threads(),
        "runtime_threads": threads(), "load_average": [round(v, 2) for v in os.getloadavg()],
        "backbones": results, "best_runtime": best["runtime"], "ratio": best["ratio"], "max_diff": best["max_diff"],
    }
    for result in results:
        print(f"{result['backbone']} ({result['weights']}, {result['image_size']} px, {result['images']} images, "
              f"batch {result['batch']}):")
        for row in result["rows"]:
            print(f"  {row['runtime']:<24} {row['images_per_s']:>8.1f} images/s  x{row['ratio']:<6} "
                  f"max diff {row['max_diff']:.3g}")
    print(f"best: {best['runtime']} x{best['ratio']} over torch eager on {head['backbone']}, max diff {best['max_diff']:.3g}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
