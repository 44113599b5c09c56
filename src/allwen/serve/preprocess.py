"""A member's evaluation preprocessing in numpy and PIL, for the torch-free ONNX runtime.

Same steps as :func:`allwen.data.transforms.build_transform` with ``train=False``: CLAHE
(OpenCV, the same function), a square resize with the backbone's interpolation, uint8 ->
[0, 1], the backbone's mean/std. The resize is PIL's, whose antialiased filters torchvision's
uint8 kernels follow; pixels may differ by a grey level or two after rounding, which moves
probabilities by far less than the models' own uncertainty (the ONNX-vs-torch test measures it).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from allwen.bundle import Preprocessing

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}


def preprocess(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """An RGB PIL image -> float32 (3, H, W), normalised as the member was trained."""
    options = pre.clahe_options
    if options is not None and options.order == "before_resize":
        image = _clahe(image, pre)
    if pre.image_size:
        image = image.resize((pre.image_size, pre.image_size), _FILTERS[pre.interpolation])
    if options is not None and options.order == "after_resize":
        image = _clahe(image, pre)
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def _clahe(image: Image.Image, pre: Preprocessing) -> Image.Image:
    from allwen.data.clahe import clahe_rgb

    options = pre.clahe_options
    return Image.fromarray(clahe_rgb(np.asarray(image.convert("RGB")), pre.clahe_clip, pre.clahe_grid, options.channel,
                                     options.background == "keep_black"))
