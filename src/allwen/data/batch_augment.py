"""The protocols' augmentations on whole batches, each image with its own random draw.

torchvision's v2 transforms draw one set of parameters per call, so a batch had to be augmented
image by image (a Python loop of small kernels: most of a CPU epoch's input time on 224-px
JPEGs). These functions draw every image's parameters at once, from the same distributions as
the v2 transforms of :data:`allwen.data.transforms.AUGMENTATIONS`, and apply them as a few
batched tensor operations, on whichever device the batch is on (the GPU when there is one).

Values stay on the uint8 scale (0..255, float) with uint8's rounding or truncation after each
step, as v2 does on uint8 tensors; the geometric set (crop, rotation, flip, shift) resamples
twice (bilinear crop, then nearest-neighbour rotation + flip + shift), where v2 resamples three
times with the same interpolations.
``tests/data/test_batch_augment.py`` compares statistics of augmented batches of both.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _coin(n: int, device: torch.device, p: float = 0.5) -> torch.Tensor:
    return torch.rand(n, device=device) < p


def _flip(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], x.flip(dim), x)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """v2.functional.adjust_brightness on uint8: blend with black, clamp, truncate."""
    return (x * factor[:, None, None, None]).clamp_(0, 255).floor_()


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """v2.functional.adjust_contrast on uint8: blend with the image's mean grey, clamp, truncate."""
    weights = torch.tensor(GRAY, device=x.device, dtype=x.dtype)[None, :, None, None]
    mean = (x * weights).sum(dim=1, keepdim=True).mean(dim=(-2, -1), keepdim=True)
    f = factor[:, None, None, None]
    return (f * x + (1 - f) * mean).clamp_(0, 255).floor_()


def _flips_color_draws(n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per image: horizontal flip, vertical flip, brightness, contrast, brightness first."""
    hflip, vflip = _coin(n, device), _coin(n, device)
    brightness, contrast = _uniform(n, 0.8, 1.2, device), _uniform(n, 0.8, 1.2, device)
    return hflip, vflip, brightness, contrast, _coin(n, device)


def flips_color(x: torch.Tensor) -> torch.Tensor:
    """Experiment A: RandomHorizontalFlip, RandomVerticalFlip, ColorJitter(brightness=0.2,
    contrast=0.2), the two colour changes in a random order per image (as ColorJitter does)."""
    n, device = len(x), x.device
    hflip, vflip, b, c, brightness_first = _flips_color_draws(n, device)
    x = _flip(x, hflip, -1)
    x = _flip(x, vflip, -2)
    one = torch.ones(n, device=device)
    # brightness then contrast for some images, contrast then brightness for the others
    x = _brightness(x, torch.where(brightness_first, b, one))
    x = _contrast(x, c)
    return _brightness(x, torch.where(brightness_first, one, b))


def flips_color_normalised(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """:func:`flips_color` then ``(x / 255 - mean) / std``, for a uint8 batch on the CPU, with the
    same draws and numbers, in about one pass over the pixels instead of a dozen.

    Every colour step maps an image's 256 levels to levels (per image; contrast needs the
    image's mean grey, which a histogram gives), and normalising maps each channel's levels to
    floats: so the whole chain is a 256-entry table per image and channel, computed with the
    float32 operations :func:`flips_color` runs on every pixel, and applied by ``cv2.LUT``
    straight from uint8. Flips move pixels and commute with the tables: ``cv2.flip`` on the
    uint8 planes drawn to flip. The mean grey is summed from the histogram (float64) where
    :func:`flips_color` sums pixels (float32): a level may round the other way once in a great
    many pixels.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one image plane per call: OpenCV's threads would only wait on each other
    try:
        return torch.from_numpy(_lookup(images, mean, std))
    finally:
        cv2.setNumThreads(threads)


def _lookup(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    n, channels, height, width = images.shape
    hflip, vflip, b, c, brightness_first = _flips_color_draws(n, images.device)
    codes = {(True, False): 1, (False, True): 0, (True, True): -1}  # cv2.flip: around the y axis, x axis, both
    planes = [plane if (h, v) == (False, False) else cv2.flip(plane, codes[h, v])
              for image, h, v in zip(np.ascontiguousarray(images.numpy()), hflip.tolist(), vflip.tolist())
              for plane in image]
    hist = torch.from_numpy(np.stack([cv2.calcHist([p], [0], None, [256], [0, 256]).ravel() for p in planes]))
    hist = hist.view(n, channels, 256).double()  # pixel counts per image and channel
    levels = torch.arange(256, dtype=torch.float32)[None].expand(n, 256)
    brighter = (levels * b[:, None]).clamp(0, 255).floor()
    before = torch.where(brightness_first[:, None], brighter, levels)  # the levels contrast sees
    grey = torch.tensor(GRAY, dtype=torch.float64)
    mean_grey = ((hist * before[:, None].double()).sum(-1) @ grey / (height * width)).float()[:, None]
    f = c[:, None]
    contrasted = (f * before + (1 - f) * mean_grey).clamp(0, 255).floor()
    final = torch.where(brightness_first[:, None], contrasted, (contrasted * b[:, None]).clamp(0, 255).floor())
    tables = ((final[:, None, :] / 255 - mean.view(1, -1, 1)) / std.view(1, -1, 1)).reshape(-1, 256).numpy()
    out = np.empty((len(planes), height, width), dtype=np.float32)
    for plane, table, target in zip(planes, tables, out):
        cv2.LUT(plane, table, dst=target)
    return out.reshape(n, channels, height, width)


def _crop_boxes(n: int, height: int, width: int, device: torch.device, attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop.get_params(scale=(0.8, 1), ratio=(3/4, 4/3)) for ``n`` images at once:
    (top, left, h, w); the first of 10 attempts that fits, else the whole image's central crop."""
    area = height * width
    target = area * _uniform(n * attempts, 0.8, 1.0, device).view(n, attempts)
    log_ratio = _uniform(n * attempts, math.log(3 / 4), math.log(4 / 3), device).view(n, attempts)
    ratio = log_ratio.exp()
    w = torch.sqrt(target * ratio).round()
    h = torch.sqrt(target / ratio).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1, device=device))
    pick = first.clamp_min(0)[:, None]
    h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
    top = torch.floor(torch.rand(n, device=device) * (height - h + 1))
    left = torch.floor(torch.rand(n, device=device) * (width - w + 1))
    whole = first < 0  # square images always fit within 10 attempts in practice; torchvision's fallback
    h, w = torch.where(whole, float(height), h), torch.where(whole, float(width), w)
    top, left = torch.where(whole, 0.0, top), torch.where(whole, 0.0, left)
    return torch.stack([top, left, h, w], dim=1)


def _resample(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def crop_rotate_flip_shift(x: torch.Tensor) -> torch.Tensor:
    """Experiment B: RandomResizedCrop(scale 0.8-1) -> RandomRotation(20) -> RandomHorizontalFlip
    -> RandomAffine(translate 10%), black fill: the crop resampled bilinearly and rounded to
    uint8 (as v2's resize), then rotation, flip and whole-pixel shift as one nearest-neighbour
    resampling, masked by the shifted frame (v2 rotates and shifts with nearest neighbours; an
    integer shift after a nearest rotation is the nearest resampling of the two composed)."""
    n, _, height, width = x.shape
    device = x.device
    top, left, h, w = _crop_boxes(n, height, width, device).unbind(1)
    zero = torch.zeros(n, device=device)
    sx, sy = w / width, h / height
    cx, cy = (2 * left + w) / width - 1, (2 * top + h) / height - 1
    crop = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
    x = _resample(x, crop, "bilinear").round_().clamp_(0, 255)
    angle = torch.deg2rad(_uniform(n, -20.0, 20.0, device))
    flip = torch.where(_coin(n, device), -1.0, 1.0)
    tx = torch.round(_uniform(n, -0.1 * width, 0.1 * width, device)) * 2 / width
    ty = torch.round(_uniform(n, -0.1 * height, 0.1 * height, device)) * 2 / height
    # output (normalised coords) -> input: undo the shift, then the flip, then the rotation
    cos, sin = angle.cos(), angle.sin()
    a11, a12, a21, a22 = cos * flip, sin, -sin * flip, cos
    theta = torch.stack([
        torch.stack([a11, a12, -(a11 * tx + a12 * ty)], dim=1),
        torch.stack([a21, a22, -(a21 * tx + a22 * ty)], dim=1),
    ], dim=1)
    # v2 rotates within the frame, then shifts the frame: what the rotation moved out of the
    # frame stays lost, so the shift's own fill is black too
    one = torch.ones(n, device=device)
    shift = torch.stack([torch.stack([one, zero, -tx], 1), torch.stack([zero, one, -ty], 1)], 1)
    inside = _resample(torch.ones_like(x[:, :1]), shift, "nearest")
    return _resample(x, theta, "nearest") * inside


BATCH_AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "flips_color": flips_color,
    "crop_rotate_flip_shift": crop_rotate_flip_shift,
}


NORMALISED: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "flips_color": flips_color_normalised,  # CPU uint8 batches; the others augment, then normalise
}


def batch_augment(name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The batched version of ``data.augment`` (float (n, 3, H, W) on the 0..255 scale in and
    out), None when it has nothing random per batch (``none``; ``dihedral`` draws in the sampler)."""
    return BATCH_AUGMENTATIONS.get(name)


__all__ = ["BATCH_AUGMENTATIONS", "NORMALISED", "batch_augment", "flips_color", "flips_color_normalised",
           "crop_rotate_flip_shift"]
