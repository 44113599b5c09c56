"""A member's evaluation preprocessing in numpy and PIL, for the torch-free ONNX runtime.

Same steps as :func:`allwen.data.transforms.build_transform` with ``train=False``: CLAHE
(OpenCV, the same function), a square resize with the backbone's interpolation, uint8 ->
[0, 1], the backbone's mean/std. The resize is PIL's, whose antialiased filters torchvision's
uint8 kernels follow; pixels may differ by a grey level or two after rounding, which moves
probabilities by far less than the models' own uncertainty (the ONNX-vs-torch test measures it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}


def preprocess(image: Image.Image, data: dict[str, Any], norm: dict[str, Any]) -> np.ndarray:
    """An RGB PIL image -> float32 (3, H, W), normalised as the member was trained."""
    options = data.get("clahe") or None
    options = {} if options is True else options
    if options is not None and options.get("order", "before_resize") == "before_resize":
        image = _clahe(image, data, options)
    size = data.get("image_size")
    if size:
        image = image.resize((size, size), _FILTERS.get(norm.get("interpolation", "bilinear"), Image.Resampling.BILINEAR))
    if options is not None and options.get("order") == "after_resize":
        image = _clahe(image, data, options)
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def _clahe(image: Image.Image, data: dict[str, Any], options: dict[str, Any]) -> Image.Image:
    from allwen.data.clahe import clahe_rgb

    return Image.fromarray(clahe_rgb(np.asarray(image.convert("RGB")), data.get("clahe_clip", 2.0), data.get("clahe_grid", 8),
                                     options.get("channel", "lab_lightness"),
                                     options.get("background", "keep_black") == "keep_black"))
