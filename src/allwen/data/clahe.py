"""CLAHE on RGB cell images, in OpenCV only (training, torch prediction and the ONNX runtime share it)."""

from __future__ import annotations

import cv2
import numpy as np


def clahe_rgb(image: np.ndarray, clip: float = 2.0, grid: int = 8, channel: str = "lab_lightness",
              keep_black: bool = True) -> np.ndarray:
    """CLAHE on an RGB image: on the lightness channel (LAB, ``channel="lab_lightness"``), so stain
    colours keep their hue, or on each of R, G, B (``"rgb"``).

    ``keep_black``: pure black pixels stay black: C-NMC cells are segmented onto a black
    background, and CLAHE would otherwise lift all-black tiles to grey and blur the cell's outline.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"CLAHE needs an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid))
    if channel == "lab_lightness":
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        lab[..., 0] = clahe.apply(lab[..., 0])
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    elif channel == "rgb":
        out = np.stack([clahe.apply(np.ascontiguousarray(image[..., c])) for c in range(3)], axis=2)
    else:
        raise ValueError(f"data.clahe.channel={channel!r}: choose lab_lightness or rgb")
    if keep_black:
        out[~image.any(axis=2)] = 0
    return out


__all__ = ["clahe_rgb"]
