"""ONNX export of a bundle's members and inference with onnxruntime.

Each member is exported as one graph from a normalised image batch ``input`` (n, 3, H, W) to
class ``probabilities`` (n, K), whatever its head, so the runtime needs no allwen code for the
network itself; preprocessing stays in Python (:mod:`allwen.serve.preprocess` for this runtime).
Only :func:`export_onnx` needs torch; sessions and their forward functions do not.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allwen.threads import session_options

if TYPE_CHECKING:
    from allwen.models.heads import ClassifierModel

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 18


def export_onnx(model: ClassifierModel, path: Path, image_size: int | None) -> Path:
    """Write ``model`` as ONNX with a dynamic batch (and dynamic H, W when the size is native)."""
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


def onnx_session(path: Path, device: Any = "cpu"):
    """An onnxruntime session on the CUDA provider when the device is a GPU and ORT has it, else CPU."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise ValueError("--runtime onnx needs onnxruntime: pip install 'allwen[serve]'") from None
    kind = str(getattr(device, "type", device)).split(":", 1)[0]
    providers = ["CPUExecutionProvider"]
    if kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = session_options()  # allwen.threads: the thread budget, threads that do not spin
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own error types for bad graphs
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: onnxruntime cannot load it ({first[:200]}); re-export the bundle") from None


def session_forward(session):
    """A batch -> probabilities function over an onnxruntime session.

    numpy in, numpy out; a torch tensor in gives a torch tensor out (the export check and the
    benchmark compare against PyTorch).
    """
    name = session.get_inputs()[0].name

    def forward(x):
        if hasattr(x, "detach"):
            import torch

            array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            return torch.from_numpy(session.run(None, {name: array})[0])
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return forward
