"""Benchmark: a bundle member's network in PyTorch vs onnxruntime on CPU, in one run.

Builds the backbone + head that ``allwen export --format onnx`` exports (the weights do not
change the speed, so random initialisation is used and no download is needed), exports it
with the same function, then times both runtimes on the same normalised image batches
(preprocessing is shared by both runtimes and not timed). Prints images per second of each,
the ratio and the largest probability difference.

    .venv/bin/python benchmarks/onnx_runtime.py                                  # mobilenetv2_100, 224 px
    .venv/bin/python benchmarks/onnx_runtime.py --backbone test_efficientnet --image-size 64
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from allwen.config.schema import ModelConfig
from allwen.models import build_classifier
from allwen.export.onnx import export_onnx
from allwen.serve.onnx_runtime import onnx_session, session_forward


def _images_per_second(forward, batches: list[torch.Tensor], repeats: int) -> float:
    forward(batches[0])  # warm-up (allocations, graph optimisation)
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            forward(batch)
    return repeats * sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--head", default="sigmoid")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone=args.backbone, weights="none", head=args.head), 2).eval()
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
               for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", args.image_size)
        onnx_forward = session_forward(onnx_session(path, torch.device("cpu")))

        def torch_forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model.probabilities(model(x))

        diff = max(float(np.abs(torch_forward(b).numpy() - onnx_forward(b).numpy()).max()) for b in batches)
        torch_ips = _images_per_second(torch_forward, batches, args.repeats)
        onnx_ips = _images_per_second(onnx_forward, batches, args.repeats)
    print(f"{args.backbone} + {args.head} head, {args.image_size} px, batches of {args.batch_size}, "
          f"{args.batches * args.repeats * args.batch_size} images per runtime, CPU, {torch.get_num_threads()} torch threads")
    print(f"pytorch:     {torch_ips:8.1f} images/s")
    print(f"onnxruntime: {onnx_ips:8.1f} images/s")
    print(f"ratio onnxruntime / pytorch: {onnx_ips / torch_ips:.2f}x; largest probability difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
