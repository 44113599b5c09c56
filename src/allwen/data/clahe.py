"""CLAHE on RGB cell images, in OpenCV only (training, torch prediction and the ONNX runtime share it)."""

from __future__ import annotations

import cv2
import numpy as np


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


__all__ = ["clahe_rgb"]
