"""Grad-CAM overlays (the ``grad-cam`` library): where in the cell the model looked.

For each member, Grad-CAM++ of the bundle's predicted class on the backbone's last feature block
before pooling (:func:`target_layer`, from the model's ``feature_info``). Grad-CAM++ rather than plain
Grad-CAM: on generated cells whose class is in the nucleus alone (ImageNet MobileNetV2, trained head) it puts
0.775 of the map's mass on the nucleus against Grad-CAM's 0.674 (nucleus = 0.45 of the frame); it stays
class-specific, unlike EigenCAM (0.90, but the same map whatever the class). Maps are resized to the original image and, for an ensemble, averaged
with the ensemble weights (members with weight 0 add nothing), then laid over the image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from allwen.io import atomic_write

if TYPE_CHECKING:
    from allwen.models.heads import ClassifierModel

log = logging.getLogger(__name__)


class ClassScores(nn.Module):
    """Per-class scores (n, K) for Grad-CAM targets: logits, or (-z, z) for a one-logit sigmoid head."""

    def __init__(self, model: ClassifierModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return torch.cat([-logits, logits], dim=1) if self.model.is_sigmoid else logits


def target_layer(model: ClassifierModel, example: torch.Tensor) -> nn.Module:
    """Grad-CAM's target: the backbone's last feature block before pooling, as the model names it.

    timm models list their feature blocks in ``feature_info`` (``blocks.6`` of an EfficientNet or a
    MobileNet); the last one is the deepest map that still holds "where", named by the model rather
    than found by shape (MobileNetV3's head convolution follows its pooling, so a search by shape
    found the whole ``blocks`` list). A backbone without ``feature_info``, or whose last block is
    1 x 1 for this input (a small image through a deep network), gets :func:`last_feature_layer`.
    """
    info = getattr(model.backbone, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and info[-1].get("module"):
        try:
            layer = model.backbone.get_submodule(info[-1]["module"])
        except AttributeError:
            layer = None
        if layer is not None and _map_area(model, layer, example) > 1:
            return layer
    return last_feature_layer(model, example)


def _map_area(model: ClassifierModel, layer: nn.Module, example: torch.Tensor) -> int:
    """Height x width of ``layer``'s output for ``example`` (0 when it is not a 4-D map)."""
    area: list[int] = []

    def record(_module: nn.Module, _inputs: object, out: object) -> None:
        area.append(out.shape[-2] * out.shape[-1] if torch.is_tensor(out) and out.ndim == 4 else 0)

    hook = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            model.backbone(example)
    finally:
        hook.remove()
    return area[-1] if area else 0


def last_feature_layer(model: ClassifierModel, example: torch.Tensor) -> nn.Module:
    """The backbone module that last outputs a spatial (n, C, H, W) map, for backbones without
    ``feature_info``.

    Maps of 1 x 1 (a small input through a deep network) hold no "where", so the last map larger
    than that is taken when there is one.
    """
    seen: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _inputs: object, out: object) -> None:
        if torch.is_tensor(out) and out.ndim == 4:
            seen.append((module, out.shape[-2] * out.shape[-1]))

    hooks = [module.register_forward_hook(record) for module in model.backbone.modules()]
    try:
        with torch.no_grad():
            model.backbone(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise ValueError(f"{type(model.backbone).__name__} has no 4-D feature map for Grad-CAM")
    spatial = [module for module, area in seen if area > 1]
    return spatial[-1] if spatial else seen[-1][0]


def member_cams(model: ClassifierModel, batch: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    """Grad-CAM++ maps (n, H, W) in [0, 1] at the input's size, one per image, for ``targets``."""
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = target_layer(model, batch[:1])
    with GradCAMPlusPlus(model=ClassScores(model).eval(), target_layers=[layer]) as cam:
        maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(k)) for k in targets])
    return np.asarray(maps, dtype=np.float32)


OVERLAY_MAX_SIDE = 1024  # overlays are for looking at: a 40-megapixel upload gets a 1024-pixel overlay


def overlay_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, OVERLAY_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def combined_cams(bundle: Any, images: Sequence[Image.Image], targets: np.ndarray,
                  device: torch.device, sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Per image, the members' Grad-CAM maps at ``sizes`` (default: the image's own) averaged with
    the ensemble weights."""
    sizes = list(sizes) if sizes is not None else [(im.width, im.height) for im in images]
    combined = [np.zeros((h, w), np.float32) for w, h in sizes]
    total = sum(m.weight for m in bundle.members if m.weight > 0) or 1.0
    for member in bundle.members:
        if member.weight <= 0:
            continue
        model = member.model().to(device)
        for i, image in enumerate(images):  # one by one: members of native size see images of any size
            # the input the bundle's runtime predicted from (ONNX: numpy/PIL preprocessing, cheap on huge images)
            x = torch.from_numpy(member.array(image)) if bundle.runtime == "onnx" else member.transform(image)
            batch = x[None].to(device)
            cam = member_cams(model, batch, [targets[i]])[0]
            combined[i] += (member.weight / total) * cv2.resize(cam, sizes[i], interpolation=cv2.INTER_LINEAR)
        model.zero_grad(set_to_none=True)
    return [np.clip(cam, 0.0, 1.0) for cam in combined]


def gradcam_overlays(bundle: Any, images: Sequence[Image.Image], targets: np.ndarray,
                     device: torch.device) -> list[np.ndarray]:
    """An RGB uint8 overlay per image: the combined map (red = looked at, blue = ignored, the
    "jet" colour scale) over the image, at most ``OVERLAY_MAX_SIDE`` pixels on a side."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    sizes = [overlay_size(im.width, im.height) for im in images]
    cams = combined_cams(bundle, images, targets, device, sizes)
    out = []
    for image, cam, size in zip(images, cams, sizes):
        shown = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
        out.append(show_cam_on_image(np.asarray(shown, dtype=np.float32) / 255.0, cam, use_rgb=True, image_weight=0.55))
    return out


def png_bytes(overlay: np.ndarray) -> bytes:
    import io

    from allwen.serve.overlays import overlay_pnginfo

    buf = io.BytesIO()
    Image.fromarray(overlay).save(buf, format="PNG", pnginfo=overlay_pnginfo())  # never read back as a cell
    return buf.getvalue()


def save_png(overlay: np.ndarray, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(png_bytes(overlay)))
