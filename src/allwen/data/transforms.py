"""Preprocessing blocks: resize, CLAHE, the protocols' augmentation sets, backbone normalisation.

Normalisation statistics come from the backbone's own pretrained config (timm's
``resolve_model_data_config``), never from hard-coded ImageNet numbers.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from allwen.config.schema import DataConfig
from allwen.data.clahe import clahe_rgb
from allwen.data.images import ImageReadError, read_rgb

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class Clahe(torch.nn.Module):
    """CLAHE as a transform (Experiment C): on PIL images (before the resize) or on uint8 CHW
    tensors (after it, ``data.clahe.order: after_resize``)."""

    def __init__(self, clip: float = 2.0, grid: int = 8, channel: str = "lab_lightness", keep_black: bool = True) -> None:
        super().__init__()
        self.clip, self.grid, self.channel, self.keep_black = clip, grid, channel, keep_black

    def _apply(self, rgb: np.ndarray) -> np.ndarray:
        return clahe_rgb(rgb, self.clip, self.grid, self.channel, self.keep_black)

    def forward(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        if isinstance(image, torch.Tensor):
            out = self._apply(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()))
            return v2.functional.to_image(torch.from_numpy(out).permute(2, 0, 1).contiguous())
        return Image.fromarray(self._apply(np.asarray(image.convert("RGB"))))


def _flips_color(size: int | None) -> list[torch.nn.Module]:
    """Experiment A: random horizontal and vertical flips, brightness and contrast changes."""
    return [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.ColorJitter(brightness=0.2, contrast=0.2)]


def _crop_rotate_flip_shift(size: int | None) -> list[torch.nn.Module]:
    """Experiment B: cropping, rotation, flipping and shifting."""
    crop = [v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True)] if size else []
    return crop + [
        v2.RandomRotation(20),
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=0, translate=(0.1, 0.1)),
    ]


def dihedral_view(image: torch.Tensor, view: int) -> torch.Tensor:
    """One of the 8 symmetries of the square: ``view % 4`` quarter turns, then a horizontal flip
    when ``view >= 4``. Cells have no up or left, so all 8 views are equally valid images."""
    out = torch.rot90(image, view % 4, dims=(-2, -1))
    return out.flip(-1) if view >= 4 else out


DIHEDRAL_VIEWS = 8

AUGMENTATIONS: dict[str, Callable[[int | None], list[torch.nn.Module]]] = {
    "none": lambda size: [],
    "flips_color": _flips_color,
    "crop_rotate_flip_shift": _crop_rotate_flip_shift,
    # the view is drawn by the sampler (allwen.training.inputs), not here, so that every view
    # is a deterministic input whose frozen-part output can be cached
    "dihedral": lambda size: [],
}


def decode_transform(data: DataConfig, norm: dict[str, Any]) -> v2.Compose:
    """The deterministic part: PIL image -> CLAHE -> uint8 CHW tensor at the training size (CLAHE
    after the resize under ``data.clahe.order: after_resize``).

    Its output is what the decoded-image cache stores; augmentation and normalisation follow
    on the uint8 tensor (:func:`augment_transform`, :func:`normalize_transform`).
    """
    steps: list[torch.nn.Module] = []
    options = data.clahe_options
    clahe = None if options is None else Clahe(data.clahe_clip, data.clahe_grid, options.channel,
                                               options.background == "keep_black")
    if clahe is not None and options.order == "before_resize":
        steps.append(clahe)
    steps.append(v2.ToImage())
    if data.image_size:
        interp = INTERPOLATIONS.get(norm.get("interpolation", "bilinear"), InterpolationMode.BILINEAR)
        steps.append(v2.Resize((data.image_size, data.image_size), interpolation=interp, antialias=True))
    if clahe is not None and options.order == "after_resize":  # Experiment C's paper: resize, then CLAHE
        steps.append(clahe)
    return v2.Compose(steps)


def augment_transform(data: DataConfig) -> v2.Compose | None:
    """Random per-image augmentation on uint8 tensors (None: nothing random to do)."""
    if data.augment not in AUGMENTATIONS:
        raise ValueError(f"data.augment={data.augment!r}: choose from {sorted(AUGMENTATIONS)}")
    steps = AUGMENTATIONS[data.augment](data.image_size)
    return v2.Compose(steps) if steps else None


def normalize_transform(norm: dict[str, Any]) -> v2.Compose:
    """uint8 -> float in [0, 1] -> the backbone's mean/std."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(norm["mean"]), std=list(norm["std"]))])


def build_transform(data: DataConfig, norm: dict[str, Any], train: bool, augment: bool | None = None) -> v2.Compose:
    """PIL image -> normalised float tensor in one per-image pipeline (augmentation only when
    training asks for it). Training batches take the cached route instead
    (:mod:`allwen.training.inputs`); this one serves single images and the benchmark."""
    augment = train if augment is None else augment
    steps: list[Callable] = [decode_transform(data, norm)]
    random = augment_transform(data) if augment else None
    if random is not None:
        steps.append(random)
    steps.append(normalize_transform(norm))
    return v2.Compose(steps)


def load_rgb(path: str, max_pixels: int | None = None) -> Image.Image:
    """8-bit RGB, decoded faithfully (see :mod:`allwen.data.images`); ImageReadError names the file.

    Training reads only images the run's audit accepted (under ``data.max_pixels``), so it
    passes no limit here; predicting on files a user hands over passes one.
    """
    return read_rgb(path, max_pixels).image


def read_image(path: str) -> Image.Image:
    """``load_rgb`` with the error a user can act on (ImageReadError names the file)."""
    try:
        return load_rgb(path)
    except ImageReadError as exc:
        raise ImageReadError(f"{exc}; run `allwen inspect` on the dataset") from None


class ImageDataset(Dataset):
    """(image tensor, label) pairs from file paths; labels -1 mean unlabelled."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: Callable) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_image(self.paths[i])), int(self.labels[i])
