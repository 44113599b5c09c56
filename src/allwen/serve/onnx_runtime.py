"""Inference with onnxruntime: a bundle member's ``model.onnx`` and the OOD member's ``features.onnx``.

Each member was exported (:mod:`allwen.export.onnx`) as one graph from a normalised image batch
``input`` (n, 3, H, W) to class ``probabilities`` (n, K), whatever its head, so the runtime needs
no allwen code for the network itself; preprocessing stays in Python (:mod:`allwen.serve.preprocess`).
Nothing here imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from allwen.threads import inference_session

log = logging.getLogger(__name__)


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
    try:
        return inference_session(path, providers=tuple(providers))  # the thread budget, threads that do not spin
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


def onnx_features(session: Any):
    """A float32 (n, 3, H, W) array -> features (n, d) function over a ``features.onnx`` session."""
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0], np.float64)


def fixed_side(session: Any) -> int | None:
    """The square side a session's input is fixed at (None: dynamic height and width)."""
    shape = session.get_inputs()[0].shape
    sides = [d for d in shape[2:4] if isinstance(d, int)]
    return sides[0] if len(sides) == 2 and sides[0] == sides[1] else None
