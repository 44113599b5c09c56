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
from allwen.data.images import ImageReadError, read_rgb

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def clahe_rgb(image: np.ndarray, clip: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the lightness channel (LAB), so stain colours keep their hue.

    Pure black pixels stay black: C-NMC cells are segmented onto a black background, and
    CLAHE would otherwise lift all-black tiles to grey and blur the cell's outline.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"CLAHE needs an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(lab[..., 0])
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    out[~image.any(axis=2)] = 0
    return out


class Clahe(torch.nn.Module):
    """CLAHE as a transform on PIL images (Experiment C)."""

    def __init__(self, clip: float = 2.0, grid: int = 8) -> None:
        super().__init__()
        self.clip, self.grid = clip, grid

    def forward(self, image: Image.Image) -> Image.Image:
        return Image.fromarray(clahe_rgb(np.asarray(image.convert("RGB")), self.clip, self.grid))


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


AUGMENTATIONS: dict[str, Callable[[int | None], list[torch.nn.Module]]] = {
    "none": lambda size: [],
    "flips_color": _flips_color,
    "crop_rotate_flip_shift": _crop_rotate_flip_shift,
}


def build_transform(data: DataConfig, norm: dict[str, Any], train: bool, augment: bool | None = None) -> v2.Compose:
    """PIL image -> normalised float tensor; augmentation only when training asks for it."""
    augment = train if augment is None else augment
    steps: list[torch.nn.Module] = []
    if data.clahe:
        steps.append(Clahe(data.clahe_clip, data.clahe_grid))
    steps.append(v2.ToImage())
    if data.image_size:
        interp = INTERPOLATIONS.get(norm.get("interpolation", "bilinear"), InterpolationMode.BILINEAR)
        steps.append(v2.Resize((data.image_size, data.image_size), interpolation=interp, antialias=True))
    if augment:
        if data.augment not in AUGMENTATIONS:
            raise ValueError(f"data.augment={data.augment!r}: choose from {sorted(AUGMENTATIONS)}")
        steps.extend(AUGMENTATIONS[data.augment](data.image_size))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(norm["mean"]), std=list(norm["std"]))]
    return v2.Compose(steps)


def load_rgb(path: str, max_pixels: int | None = None) -> Image.Image:
    """8-bit RGB, decoded faithfully (see :mod:`allwen.data.images`); ImageReadError names the file.

    Training reads only images the run's audit accepted (under ``data.max_pixels``), so it
    passes no limit here; predicting on files a user hands over passes one.
    """
    return read_rgb(path, max_pixels).image


class ImageDataset(Dataset):
    """(image tensor, label) pairs from file paths; labels -1 mean unlabelled."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: Callable) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            image = load_rgb(self.paths[i])
        except ImageReadError as exc:
            raise ImageReadError(f"{exc}; run `allwen inspect` on the dataset") from None
        return self.transform(image), int(self.labels[i])
