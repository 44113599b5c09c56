"""Checkpoints as safetensors files with JSON metadata.

safetensors holds tensors only, so loading a checkpoint cannot execute code (a pickle can);
that is why nothing else is accepted. Metadata (backbone name, classes, data config...) goes
into the file's header as JSON strings, so a checkpoint describes itself.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from allwen.bundle.files import decode_metadata
from allwen.io import atomic_write

logger = logging.getLogger(__name__)

_TOLERATED_SUFFIX = "num_batches_tracked"


def safetensors_path(path: str | os.PathLike[str], key: str | None = None, expected: str = "") -> Path:
    """Only ``.safetensors`` files are read or written: pickled formats can run code. The one check
    and its one message (the config ``key`` that named the file, if any, and how to convert it)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        where = f"{key}={str(path)!r}" if key else str(path)
        raise ValueError(
            f"{where}: expected {expected}a path to a .safetensors file. allwen never unpickles a "
            "checkpoint (.pth/.pt/.bin/.ckpt can run arbitrary code); convert it once on a machine you "
            "trust, e.g. python -c \"import torch; from safetensors.torch import save_file; "
            "sd = torch.load('weights.pth', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); "
            "save_file({k: v.contiguous() for k, v in sd.items()}, 'weights.safetensors')\""
        )
    return path


def _encode_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    """safetensors metadata is str -> str; JSON-encode each value so types survive."""
    encoded: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise ValueError(f"metadata keys must be strings, not {key!r}")
        try:
            encoded[key] = json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"metadata[{key!r}] is not JSON-serialisable: {exc}") from None
    return encoded


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """Write the model's state dict and JSON metadata atomically; return the path.

    Tensors are cloned to contiguous CPU copies because safetensors refuses shared or strided
    storage (tied weights, views). The file is written beside the target and renamed into
    place, so a crash never leaves a half-written checkpoint under the real name.
    """
    return save_tensors(model.state_dict(), path, metadata)


def save_tensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """:func:`save_weights` for a plain dict of tensors (a state dict, probabilities)."""
    path = safetensors_path(path)
    encoded = _encode_metadata(metadata)
    copies = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}
    atomic_write(path, lambda tmp: save_file(copies, str(tmp), metadata=encoded))
    logger.debug("saved %d tensors to %s", len(copies), path)
    return path


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU (nothing is unpickled)."""
    path = safetensors_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ValueError(f"{path} is not a valid safetensors file: {exc}") from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a safetensors file, JSON values decoded; reads the header only."""
    path = safetensors_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata()
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a valid safetensors file: {exc}") from None
    return decode_metadata(raw)


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_weights` into ``model``; return its metadata.

    Keys must match exactly except ``num_batches_tracked``: ``FrozenBatchNorm2d`` has none,
    so a checkpoint saved with a (partly) frozen backbone loads into a fresh model and vice
    versa. Anything else missing or unexpected is an error listing the keys.
    """
    metadata = read_metadata(path)
    state = load_tensors(path)
    load_state(model, state, path)
    logger.debug("loaded %d tensors from %s", len(state), path)
    return metadata


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> None:
    """Load a state dict saved before or after (un)freezing: only BatchNorm step counters may differ."""
    _check_matches(model, state, source)
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may differ now


def _check_matches(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Compare keys and shapes before loading, so a wrong file leaves the model untouched."""
    own = model.state_dict()
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith(_TOLERATED_SUFFIX))
    unexpected = sorted(
        k for k in state.keys() - own.keys() if not k.endswith(_TOLERATED_SUFFIX)
    )
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match this model: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(own.keys() & state.keys())
        if state[k].shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"{path} does not fit this model, shapes differ: {wrong}")
