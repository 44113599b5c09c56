"""What a training stage feeds the network: images decoded once, batches prepared on the device.

Today's per-image path (PIL decode -> CLAHE -> resize -> augment -> normalise, every epoch of
every unit) is split at its deterministic end. :class:`DecodedImages` stores each image's uint8
tensor at the training size once per run (``RUN/cache/decoded/``, memory-mapped, keyed by image
content and preprocessing, shared by all units); datasets hand out those uint8 tensors, and
:class:`BatchPrep` augments (whole batches, a draw per image) and normalises them on the device
they are trained on. Without a store (``data.decode_cache: false`` or native image sizes) the same
uint8 tensors are decoded per epoch, so both routes give the same numbers.

The dihedral augmentation draws its view in :class:`ViewSampler`, in the main process, so that
a view is a deterministic input: the stage-2 cache stores the frozen part's output per view.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from allwen.config.schema import DataConfig
from allwen.data.batch_augment import NORMALISED, batch_augment
from allwen.data.transforms import (
    DIHEDRAL_VIEWS,
    augment_transform,
    decode_transform,
    dihedral_view,
    normalize_transform,
    read_image,
)
from allwen.progress import track
from allwen.threads import budget, split_workers, worker_init
from allwen.training.array_store import ArrayStore

log = logging.getLogger(__name__)
DECODE_VERSION = 1  # bump when the decoding itself changes (it is part of the store key)


def resolve_workers(setting: int | str) -> int:
    """``auto``: one worker per thread of the budget but one (the main process trains);
    each worker runs one thread and counts against the budget (:mod:`allwen.threads`)."""
    return split_workers(budget(), setting)[1]


def loader_options(data: DataConfig, device: torch.device) -> dict[str, Any]:
    """DataLoader settings for image datasets: workers kept alive, one thread each (and
    Lightning's per-worker seeds), pinned memory on GPU."""
    workers = resolve_workers(data.num_workers)
    return {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": device.type == "cuda",
            "worker_init_fn": worker_init if workers else None}


# -- the decoded-image store -------------------------------------------------------------

def decode_key(data: DataConfig, norm: dict[str, Any]) -> str:
    """Everything the uint8 tensor depends on: size, interpolation, CLAHE, decoder version."""
    spec = {
        "image_size": data.image_size,
        "interpolation": norm.get("interpolation"),
        "clahe": [data.clahe_record(), data.clahe_clip, data.clahe_grid] if data.clahe else False,
        "version": DECODE_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


class _Decode(Dataset):
    def __init__(self, paths: list[str], data: DataConfig, norm: dict[str, Any]) -> None:
        self.paths, self.transform = paths, decode_transform(data, norm)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(read_image(self.paths[i])).as_subclass(torch.Tensor)


class DecodedImages:
    """uint8 (3, S, S) tensors after the deterministic preprocessing, one row per unique image."""

    def __init__(self, folder: Path, data: DataConfig, norm: dict[str, Any]) -> None:
        if not data.image_size:
            raise ValueError("the decoded-image cache needs a fixed data.image_size")
        self.data, self.norm = data, norm
        size = data.image_size
        self.store = ArrayStore(folder, decode_key(data, norm), (3, size, size), np.uint8)

    @classmethod
    def usable(cls, data: DataConfig) -> bool:
        return bool(data.decode_cache and data.image_size)

    def ensure(self, paths: list[str], hashes: list[str], workers: int = 0) -> int:
        """Decode the images not stored yet (with progress); returns how many were decoded."""
        todo = self.store.missing(hashes)
        if not todo:
            return 0
        first = dict(zip(hashes, paths))
        todo_paths = [first[h] for h in todo]
        loader = DataLoader(_Decode(todo_paths, self.data, self.norm), batch_size=64, num_workers=workers,
                            worker_init_fn=worker_init if workers else None)
        chunks = (batch.numpy() for batch in track(loader, len(todo), "decoding images", size=len))
        self.store.add(todo, chunks)
        log.info("decode cache: %d images decoded into %s", len(todo), self.store.data_path)
        return len(todo)

    def source(self, hashes: list[str]) -> "StoreRows":
        return StoreRows(self.store.data_path, self.store.rows(hashes))


@dataclass
class StoreRows:
    """Where a unit's images are in the store: picklable, opened lazily in each process."""

    path: Path
    rows: np.ndarray


# -- datasets ----------------------------------------------------------------------------

class ImageRows(Dataset):
    """(uint8 image, label) for positions 0..n-1 of a unit's rows; an item may be
    ``(position, view)`` from :class:`ViewSampler` for a dihedral view."""

    def __init__(self, labels: np.ndarray, paths: list[str] | None = None, stored: StoreRows | None = None,
                 data: DataConfig | None = None, norm: dict[str, Any] | None = None) -> None:
        self.labels = np.asarray(labels)
        self.paths, self.stored = paths, stored
        self.decode = decode_transform(data, norm) if stored is None else None
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        if self.stored is not None:
            if self._array is None:  # opened in the process that reads (workers included)
                self._array = np.load(self.stored.path, mmap_mode="r")
            return torch.from_numpy(np.array(self._array[self.stored.rows[i]]))
        return self.decode(read_image(self.paths[i])).as_subclass(torch.Tensor)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, view = item if isinstance(item, tuple) else (item, 0)
        image = self.image(i)
        return (dihedral_view(image, view) if view else image), int(self.labels[i])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


class RowTensors(Dataset):
    """(cached row, label) from an in-memory or memory-mapped array of shape (n, views, ...)."""

    def __init__(self, values: np.ndarray | torch.Tensor, rows: np.ndarray, labels: np.ndarray) -> None:
        self.values, self.rows, self.labels = values, np.asarray(rows), np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, view = item if isinstance(item, tuple) else (item, 0)
        value = self.values[self.rows[i], view]
        value = torch.as_tensor(np.array(value)) if isinstance(value, np.ndarray) else value
        return value.float(), int(self.labels[i])


class ViewSampler(Sampler):
    """Shuffled positions, each with a dihedral view (0 when ``views`` is 1), from two seeded
    generators in the main process: the same epochs whatever feeds the network."""

    def __init__(self, n: int, seed: int, views: int = 1, shuffle: bool = True) -> None:
        self.n, self.views, self.shuffle = n, views, shuffle
        self.order = torch.Generator().manual_seed(seed)
        self.view_gen = torch.Generator().manual_seed(seed + 7919)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.order).tolist() if self.shuffle else list(range(self.n))
        if self.views == 1:
            return iter(order)
        views = torch.randint(self.views, (self.n,), generator=self.view_gen).tolist()
        return iter(zip(order, views))


def views_for(data: DataConfig, augment: bool) -> int:
    return DIHEDRAL_VIEWS if augment and data.augment == "dihedral" else 1


# -- batch preparation on the device -----------------------------------------------------

class BatchPrep:
    """uint8 batch on the device -> augmentation (training) -> float, normalised.

    Augmentation runs on the whole batch, each image with its own draw
    (:mod:`allwen.data.batch_augment`), on whichever device the batch is on (the GPU when
    there is one); ``batched=False`` keeps torchvision v2's per-image loop (the reference the
    batched version is tested against). Normalisation runs once per batch. ``channels_last``
    on GPU.
    """

    def __init__(self, data: DataConfig, norm: dict[str, Any], augment: bool, channels_last: bool = False,
                 batched: bool = True) -> None:
        self.batched = batch_augment(data.augment) if augment and batched else None
        self.fused = NORMALISED.get(data.augment) if self.batched is not None else None
        self.augment = augment_transform(data) if augment and self.batched is None else None
        self.normalize = normalize_transform(norm)
        self.mean = torch.tensor(list(norm["mean"]), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(norm["std"]), dtype=torch.float32).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.fused is not None and len(images) and images.dtype == torch.uint8 and images.device.type == "cpu":
            out = self.fused(images, self.mean, self.std)  # augmented and normalised by lookup tables
        elif self.batched is not None and len(images):
            x = self.batched(images.float())  # the uint8 scale, 0..255
            out = (x / 255 - self.mean.to(x.device)) / self.std.to(x.device)
        else:
            if self.augment is not None:
                images = torch.stack([self.augment(image) for image in images])
            out = self.normalize(images).as_subclass(torch.Tensor)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out


def image_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None, data: DataConfig,
                 device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader_options(data, device))


def tensor_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None, device: torch.device) -> DataLoader:
    """Cached tensors: read in the main process (workers would only add copies)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, pin_memory=device.type == "cuda")


@torch.no_grad()
def frozen_pass(fn: torch.nn.Module | Any, loader: DataLoader, prep: BatchPrep, device: torch.device,
                what: str, views: int = 1, autocast: bool = False) -> Iterator[np.ndarray]:
    """``fn`` over every uint8 batch of ``loader`` and each of its first ``views`` dihedral
    views (no gradients), yielding float32 numpy chunks of shape (batch, views, ...)."""
    for x, _ in track(loader, len(loader.dataset), what, size=lambda b: len(b[0])):
        x = x.to(device, non_blocking=True)
        outs = []
        for view in range(views):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                outs.append(fn(prep(dihedral_view(x, view))).float())
        yield torch.stack(outs, dim=1).cpu().numpy()
