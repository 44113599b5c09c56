"""ONNX export of a bundle's members and inference with onnxruntime.

Each member is exported as one graph from a normalised image batch ``input`` (n, 3, H, W) to
class ``probabilities`` (n, K), whatever its head, so the runtime needs no allwen code for the
network itself; preprocessing stays in Python (the same transform as PyTorch uses).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from allwen.models.heads import ClassifierModel

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 18


class ProbabilityModel(nn.Module):
    """A classifier whose output is its class probabilities (n, K)."""

    def __init__(self, model: ClassifierModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.probabilities(self.model(x))


def export_onnx(model: ClassifierModel, path: Path, image_size: int | None) -> Path:
    """Write ``model`` as ONNX with a dynamic batch (and dynamic H, W when the size is native)."""
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


def onnx_session(path: Path, device: torch.device):
    """An onnxruntime session on the CUDA provider when the device is a GPU and ORT has it, else CPU."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise ValueError("--runtime onnx needs onnxruntime: pip install 'allwen[serve]'") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def session_forward(session):
    """A batch -> probabilities function over an onnxruntime session (torch in, torch out)."""
    name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(session.run(None, {name: array})[0])

    return forward
