"""ONNX export of a bundle's members (and the OOD member's backbone), each checked against PyTorch.

Each member becomes one graph from a normalised image batch ``input`` (n, 3, H, W) to class
``probabilities`` (n, K), whatever its head: fixed at the member's input size (dynamic batch), or
with dynamic height and width for a member of native size. :mod:`allwen.serve.onnx_runtime` runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allwen.bundle import BundleFolder
from allwen.serve.onnx_runtime import onnx_features, onnx_session, session_forward
from allwen.serve.predict import Member

if TYPE_CHECKING:
    from allwen.models.heads import ClassifierModel

OPSET = 18


def export_onnx(model: ClassifierModel, path: Path, image_size: int | None) -> Path:
    """Write ``model`` as ONNX with a dynamic batch (and dynamic H, W when the size is native)."""
    import warnings

    import torch
    from torch import nn

    class ProbabilityModel(nn.Module):
        """A classifier whose output is its class probabilities (n, K)."""

        def __init__(self, inner: ClassifierModel) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.probabilities(self.model(x))

    wrapper = ProbabilityModel(model).eval()
    side = image_size or 224
    dummy = torch.zeros(2, 3, side, side)
    axes = {0: "batch"} if image_size else {0: "batch", 2: "height", 3: "width"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(
            wrapper, (dummy,), str(path), input_names=["input"], output_names=["probabilities"],
            dynamic_axes={"input": axes, "probabilities": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    wrapper.eval()  # the exporter restores the wrapper's (training) mode on exit
    model.eval()
    return path


def export_features_onnx(member: Member, path: Path) -> dict[str, Any]:
    """Write the member's backbone (image batch -> pooled features) as ONNX, checked against PyTorch."""
    import warnings

    import torch

    backbone = member.model().backbone.eval()
    size = member.image_size
    side = size or 224
    axes = {0: "batch"} if size else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone, (torch.zeros(2, 3, side, side),), str(path), input_names=["input"],
                          output_names=["features"], dynamic_axes={"input": axes, "features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    backbone.eval()
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone(x).numpy()
    got = onnx_features(onnx_session(path))(x.numpy())
    worst = float(np.abs(expected - got).max() / max(1.0, float(np.abs(expected).max())))
    if worst > 1e-4:
        raise ValueError(f"{path}: ONNX features differ from PyTorch by {worst:.2e} (relative, > 1e-4)")
    return {"file": path.name, "max_rel_diff_vs_torch": worst}




def export_members_onnx(bundle: BundleFolder, members: list[Member]) -> dict[str, Any]:
    """Each member as ONNX, checked against PyTorch on a random batch (max difference recorded)."""
    import torch

    worst = 0.0
    for member in members:
        model = member.model()
        path = export_onnx(model, bundle.onnx(member.spec.folder), member.image_size)
        side = member.image_size or 224
        x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model.probabilities(model(x)).numpy()
        got = session_forward(onnx_session(path, torch.device("cpu")))(x).numpy()
        worst = max(worst, float(np.abs(expected - got).max()))
    if worst > 1e-4:
        raise ValueError(f"ONNX export differs from PyTorch by {worst:.2e} (> 1e-4); export without --format onnx")
    return {"opset": OPSET, "input": "input", "output": "probabilities", "max_abs_diff_vs_torch": worst}


__all__ = ["OPSET", "export_features_onnx", "export_members_onnx", "export_onnx"]
