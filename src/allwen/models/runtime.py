"""Forward-only runtimes for the frozen parts of a network (``train.frozen_runtime``).

Most of a CPU run's time is forward passes through layers that never change: the frozen
backbone of stage 1, the frozen lower blocks of stage 2, the test-time-augmentation views.
Eager PyTorch uses a fraction of what a CPU can do there; ONNX Runtime (and OpenVINO, an
optional extra) run the same graph several times faster with results equal to about 1e-5.

A frozen part is exported to ONNX once (the file is cached under the run's cache folder,
named by the part's cache key), loaded into the chosen runtime with the machine's threads,
and its outputs are compared with PyTorch's on a few real images before it is used: a part
whose outputs differ by more than :data:`TOLERANCE` (or that fails to export or load) is
refused, with a warning, and PyTorch runs it instead. ``auto`` means ONNX Runtime on CPU
(when installed) and PyTorch on GPU. OpenVINO runs at f32 unless ``train.frozen_precision:
low`` asks for its faster lower-precision modes (differences of several percent, so checked
against :data:`LOW_TOLERANCE`, 10% of the outputs' largest magnitude, instead).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from allwen.io import atomic_write
from allwen.threads import inference_session, openvino_config

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
TOLERANCE = 1e-4  # largest absolute difference from PyTorch accepted at f32
LOW_TOLERANCE = 0.1  # frozen_precision low: largest difference relative to the outputs' largest magnitude
# (the one lower-precision tolerance: docs/speed.md and the config reference quote it; measured 3.8-7.9%)
OPSET = 18
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "allwen[serve]", "openvino": "allwen[openvino]"}


def available(runtime: str) -> bool:
    """Whether ``runtime`` can run here (torch always can)."""
    if runtime == "torch":
        return True
    return importlib.util.find_spec(_PACKAGES[runtime]) is not None


def resolve_runtime(setting: str, device: torch.device | str) -> str:
    """The runtime a setting means on ``device``: ``auto`` is ONNX Runtime on CPU (PyTorch
    when it is not installed) and PyTorch on GPU; a named runtime that is missing is an error
    that says what to install. The non-torch runtimes run on CPU, so on a GPU they give way."""
    device = torch.device(device)
    if setting not in RUNTIMES:
        raise ValueError(f"train.frozen_runtime={setting!r}: choose from {', '.join(RUNTIMES)}")
    if setting == "auto":
        if device.type != "cpu":
            return "torch"
        if available("onnxruntime"):
            return "onnxruntime"
        log.info("train.frozen_runtime=auto: onnxruntime is not installed, frozen parts run in PyTorch "
                 "(pip install onnxruntime for a several-fold faster CPU run)")
        return "torch"
    if setting != "torch" and not available(setting):
        raise ValueError(f"train.frozen_runtime={setting}: {_PACKAGES[setting]} is not installed; "
                         f"pip install '{_EXTRAS[setting]}', or use auto or torch")
    if setting != "torch" and device.type != "cpu":
        log.info("train.frozen_runtime=%s runs on CPU; the frozen parts stay in PyTorch on %s", setting, device)
        return "torch"
    return setting


def threads() -> int:
    """The threads a frozen runtime may use: this process's share of the thread budget
    (``allwen.threads``: ``--threads``, ``ALLWEN_THREADS`` or the CPUs it may use), as torch has it."""
    from allwen.threads import budget

    return max(1, min(budget(), torch.get_num_threads()))


@dataclass
class FrozenForward:
    """A frozen part as a function (normalised batch -> output, torch in and out, no gradients).

    ``name`` is the runtime that actually runs it (``torch`` after a refused check), and
    ``max_diff`` the largest difference from PyTorch measured on the check images."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    max_diff: float = 0.0
    path: Path | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def torch_forward(module: nn.Module, autocast: bool = False) -> FrozenForward:
    """The part in PyTorch, eval mode, no gradients (bf16 autocast on GPU when asked)."""

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        was = module.training
        module.eval()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = module(x).float()
        module.train(was)
        return out

    return FrozenForward("torch", run)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``module`` (eval mode) as ONNX with a dynamic batch, atomically; returns ``path``."""
    was = module.training
    module.eval()
    dummy = example[:2].detach().float().cpu()
    module_device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.cpu()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)

    try:
        atomic_write(path, write)
    finally:
        module.to(module_device).train(was)
    return path


def _onnxruntime(path: Path, n_threads: int) -> Callable[[np.ndarray], np.ndarray]:
    session = inference_session(path, n_threads)  # the budget's threads, not spinning
    name = session.get_inputs()[0].name
    return lambda array: session.run(None, {name: array})[0]


def _openvino(path: Path, n_threads: int, low_precision: bool) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    config = {**openvino_config(n_threads), "PERFORMANCE_HINT": "THROUGHPUT"}
    if not low_precision:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return lambda array: np.asarray(compiled(array)[0])


def _wrap(name: str, run_numpy: Callable[[np.ndarray], np.ndarray], path: Path) -> FrozenForward:
    def run(x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(np.asarray(run_numpy(array), dtype=np.float32)).to(x.device)

    return FrozenForward(name, run, path=path)


def difference(reference: torch.Tensor, output: torch.Tensor, low_precision: bool = False) -> float:
    """The check's measure: the largest absolute difference, relative to the reference's largest
    magnitude when lower precision was asked for."""
    diff = float((reference.float() - output.float()).abs().max()) if reference.numel() else 0.0
    if low_precision:
        diff /= max(float(reference.abs().max()), 1e-12)
    return diff


_LOADED: dict[tuple[str, str, int, bool], FrozenForward] = {}  # checked runtimes of this process


def frozen_forward(module: nn.Module, runtime: str, export_path: Path | None, sample: torch.Tensor,
                   low_precision: bool = False, n_threads: int | None = None, what: str = "frozen part",
                   autocast: bool = False) -> FrozenForward:
    """``module`` as a forward-only function in ``runtime`` (already resolved), exported once to
    ``export_path`` and checked against PyTorch on ``sample`` (a few normalised images).

    Falls back to PyTorch, with a warning, when the export or the runtime fails or the outputs
    differ by more than the tolerance; ``export_path`` None (no cache folder) means PyTorch."""
    if runtime == "torch" or export_path is None:
        return torch_forward(module, autocast)
    n_threads = n_threads or threads()
    memo = (runtime, str(export_path), n_threads, low_precision)
    if memo in _LOADED and export_path.exists():
        return _LOADED[memo]
    tolerance = LOW_TOLERANCE if low_precision else TOLERANCE
    try:
        if not export_path.exists():
            export_onnx(module, sample, export_path)
            log.info("%s exported to %s", what, export_path)
        run = _onnxruntime(export_path, n_threads) if runtime == "onnxruntime" else \
            _openvino(export_path, n_threads, low_precision)
        runner = _wrap(runtime, run, export_path)
        reference = torch_forward(module)(sample.float().cpu())
        diff = difference(reference, runner(sample.float().cpu()), low_precision)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional runtime: PyTorch still works
        log.warning("train.frozen_runtime=%s: %s could not run there (%s: %s); using PyTorch",
                    runtime, what, type(exc).__name__, " ".join(str(exc).split())[:200])
        return torch_forward(module, autocast)
    if not diff <= tolerance:
        log.warning("train.frozen_runtime=%s: %s differs from PyTorch by %.3g on %d images (more than %g); "
                    "refused, using PyTorch", runtime, what, diff, len(sample), tolerance)
        return torch_forward(module, autocast)
    log.info("%s runs in %s (%d threads); largest difference from PyTorch on %d images %.2g",
             what, runtime, n_threads, len(sample), diff)
    runner.max_diff = diff
    _LOADED[memo] = runner
    return runner


__all__ = ["RUNTIMES", "TOLERANCE", "FrozenForward", "available", "resolve_runtime", "frozen_forward",
           "torch_forward", "export_onnx", "threads", "difference"]
