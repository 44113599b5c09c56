"""Caches of frozen network parts' outputs: pooled features (stage 1), lower blocks (stage 2).

With the backbone (or its lower blocks) frozen and the inputs deterministic, every epoch of
every fold and every learning rate pushes the same images through the same layers. The cache
computes each image's output once, keyed by image content (sha256), backbone, weights (hub
id and pretrained tag, file hash or init seed), timm version, preprocessing and the runtime
that computed it (``train.frozen_runtime``: torch, onnxruntime, openvino), and the stage
then trains only what is not frozen on the cached outputs. One :class:`ArrayStore` per key
under ``RUN/cache/features/``, rows of shape ``(views, ...)``: stage 1 uses one view, stage 2
with dihedral augmentation all 8.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import timm

from allwen.config.schema import DataConfig, ModelConfig
from allwen.data.table import file_sha256
from allwen.training.array_store import ArrayStore

log = logging.getLogger(__name__)


def weights_identity(model: ModelConfig, seed: int, pretrained_tag: str | None = None) -> str:
    """What makes two backbones' weights the same: the hub id and its pretrained tag, the
    file's content, or the init seed."""
    if model.weights == "hub":
        return f"hub:{model.backbone}:tag={pretrained_tag}"
    if model.weights == "none":
        return f"random:{model.backbone}:seed={seed}"
    return f"file:{file_sha256(model.weights)}"


def pretrained_tag(backbone: Any) -> str | None:
    """timm's tag of the weights a backbone was built for (``ra_in1k``, ``in21k_ft_in1k``...)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return cfg.get("tag")


def cache_key(model: ModelConfig, data: DataConfig, norm: dict[str, Any], seed: int,
              tag: str | None = None, **part: Any) -> str:
    """The key of one cached output: network, weights, timm version, preprocessing, and
    ``part`` (which output: e.g. ``frozen_blocks=12, views=8, dtype='float32'``)."""
    spec = {
        "backbone": model.backbone,
        "weights": weights_identity(model, seed, tag),
        "timm": timm.__version__,
        "activation": model.activation,
        "image_size": data.image_size,
        "clahe": [data.clahe_record(), data.clahe_clip, data.clahe_grid] if data.clahe else False,
        "mean": list(norm["mean"]),
        "std": list(norm["std"]),
        "interpolation": norm.get("interpolation"),
        **part,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


Compute = Callable[[list[int]], Iterable[np.ndarray]]  # positions to compute -> chunks of rows


class FeatureCache:
    """Cached outputs under one folder, shared by every unit of a run."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.seconds_computing = 0.0
        self.images_computed = 0

    def outputs(self, key: str, hashes: list[str], shape: tuple[int, ...], dtype: str,
                compute: Compute) -> tuple[np.ndarray, np.ndarray]:
        """(memory-mapped array, row of each of ``hashes``); ``compute(positions)`` yields the
        outputs of the images at those positions of ``hashes`` that are not cached yet."""
        store = ArrayStore(self.folder, key, shape, dtype)
        todo = store.missing(hashes)
        if todo:
            first = {h: i for i, h in reversed(list(enumerate(hashes)))}
            start = time.perf_counter()
            chunks = (c.astype(dtype, copy=False) for c in compute([first[h] for h in todo]))
            store.add(todo, chunks)
            seconds = time.perf_counter() - start
            self.seconds_computing += seconds
            self.images_computed += len(todo)
            log.info("feature cache %s: computed %d images in %.1fs", key, len(todo), seconds)
        return store.array(), store.rows(hashes)

    def missing(self, key: str, hashes: list[str], shape: tuple[int, ...], dtype: str) -> int:
        """How many of ``hashes`` are not stored under ``key`` yet."""
        return len(ArrayStore(self.folder, key, shape, dtype).missing(hashes))

    def shape_of(self, key: str) -> tuple[int, ...] | None:
        """The row shape a stored key has (None when nothing is stored under it)."""
        index = self.folder / f"{key}.json"
        return tuple(json.loads(index.read_text())["shape"]) if index.exists() else None

    def stage1_features(self, hashes: list[str]) -> list[tuple[str, np.ndarray]]:
        """(cache key, features per row) for every stage-1 feature store (one view of pooled features)
        that holds all of ``hashes``, computing nothing (the split's near-duplicate check by features).
        Empty when the run has no features yet."""
        if not self.folder.is_dir():
            return []
        out = []
        for index in sorted(self.folder.glob("*.json")):
            key = index.stem
            shape = self.shape_of(key)
            if shape is None or len(shape) != 2 or shape[0] != 1:
                continue  # stage-2 activations (views, C, H, W) or 8-view TTA features
            store = ArrayStore(self.folder, key, shape, json.loads(index.read_text())["dtype"])
            if store.missing(hashes):
                continue
            out.append((key, np.asarray(store.array()[store.rows(hashes), 0], dtype=np.float32)))
        return out
