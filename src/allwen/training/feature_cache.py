"""Frozen-backbone feature cache for stage 1.

With the backbone frozen and no augmentation, every epoch of every fold and every learning
rate pushes the same images through the same network. The cache computes each image's pooled
features once, keyed by image content (sha256), backbone, weights and preprocessing, and
stage 1 then trains the head on the cached features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from allwen.config.schema import DataConfig, ModelConfig
from allwen.data.table import file_sha256
from allwen.data.transforms import ImageDataset, build_transform
from allwen.io import atomic_write

log = logging.getLogger(__name__)


def weights_identity(model: ModelConfig, seed: int) -> str:
    """What makes two backbones' weights the same: the hub id, the file's content, or the init seed."""
    if model.weights == "hub":
        return f"hub:{model.backbone}"
    if model.weights == "none":
        return f"random:{model.backbone}:seed={seed}"
    return f"file:{file_sha256(model.weights)}"


def cache_key(model: ModelConfig, data: DataConfig, norm: dict[str, Any], seed: int) -> str:
    spec = {
        "backbone": model.backbone,
        "weights": weights_identity(model, seed),
        "activation": model.activation,
        "image_size": data.image_size,
        "clahe": [data.clahe, data.clahe_clip, data.clahe_grid] if data.clahe else False,
        "mean": list(norm["mean"]),
        "std": list(norm["std"]),
        "interpolation": norm.get("interpolation"),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """One safetensors file per key: features of unique images, rows named by sha256."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.seconds_computing = 0.0
        self.images_computed = 0

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def _read(self, key: str) -> dict[str, torch.Tensor]:
        path = self._path(key)
        if not path.exists():
            return {}
        with safe_open(str(path), framework="pt") as handle:
            hashes = json.loads(handle.metadata()["sha256"])
            features = handle.get_tensor("features")
        if len(hashes) != len(features):
            log.warning("%s: %d hashes for %d rows; recomputing", path, len(hashes), len(features))
            return {}
        return {h: features[i] for i, h in enumerate(hashes)}

    def _write(self, key: str, table: dict[str, torch.Tensor]) -> None:
        """One file: the features and, in its metadata, the image hash of every row."""
        hashes = sorted(table)
        features = torch.stack([table[h] for h in hashes]).contiguous()
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path(key), lambda tmp: save_file(
            {"features": features}, str(tmp), metadata={"sha256": json.dumps(hashes)}))

    def features(self, key: str, paths: list[str], hashes: list[str], backbone: torch.nn.Module,
                 data: DataConfig, norm: dict[str, Any], batch_size: int, device: torch.device) -> torch.Tensor:
        """Features for ``paths`` in order; only images not cached yet go through the backbone."""
        table = self._read(key)
        todo: dict[str, str] = {}
        for path, digest in zip(paths, hashes):
            if digest not in table and digest not in todo:
                todo[digest] = path
        if todo:
            start = time.perf_counter()
            computed = compute_features(backbone, list(todo.values()), data, norm, batch_size, device)
            table.update(zip(todo.keys(), computed))
            self._write(key, table)
            self.seconds_computing += time.perf_counter() - start
            self.images_computed += len(todo)
            log.info("feature cache %s: computed %d images in %.1fs", key, len(todo), time.perf_counter() - start)
        return torch.stack([table[h] for h in hashes])


@torch.no_grad()
def compute_features(backbone: torch.nn.Module, paths: list[str], data: DataConfig, norm: dict[str, Any],
                     batch_size: int, device: torch.device) -> torch.Tensor:
    """Pooled backbone features, no augmentation, backbone in eval mode."""
    was_training = backbone.training
    backbone.eval().to(device)
    dataset = ImageDataset(paths, np.zeros(len(paths), dtype=np.int64), build_transform(data, norm, train=False))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=data.num_workers)
    chunks = [backbone(x.to(device)).float().cpu() for x, _ in loader]
    backbone.train(was_training)
    return torch.cat(chunks)
