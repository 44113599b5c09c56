"""ImageNet-pretrained timm backbones, created by name, that output pooled features.

Weights come from one of three places, chosen by ``model.weights``: the timm / Hugging Face
hub (``"hub"``), nowhere (``"none"``, random initialisation, for tests), or a local
``.safetensors`` file for machines that cannot reach the hub. Pickled checkpoints are
refused: loading one runs arbitrary code from whoever made the file.

Which weights of an architecture is timm's *pretrained tag* (``model.pretrained_tag``):
``tf_efficientnetv2_m.in1k`` (ImageNet-1k, as Keras applications ship) and
``tf_efficientnetv2_m.in21k_ft_in1k`` (timm's default, ImageNet-21k pretraining) are one
network with different weights and results. The tag also chooses the preprocessing
(mean, std, interpolation) that a weights file is used with.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any

import timm
from safetensors import safe_open
from timm.data import resolve_model_data_config
from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, split_model_name_tag
from torch import nn

from allwen.errors import WeightsUnavailableError  # noqa: E402  (re-exported)
from allwen.models.weights_io import safetensors_path

logger = logging.getLogger(__name__)

#: Backbones the experiments use and the tests build (``test_efficientnet`` is tiny, for tests);
#: any other timm name works too, but only these families support ``activation: selu6``.
KNOWN_BACKBONES: tuple[str, ...] = (
    "tf_efficientnetv2_m",
    "tf_efficientnetv2_s",
    "efficientnet_b0",
    "efficientnet_b3",
    "tf_efficientnet_b0",
    "tf_efficientnet_b3",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "tf_efficientnet_lite0",
    "test_efficientnet",
)



def _check_name(name: str) -> None:
    """Fail early, with suggestions, on a name timm does not know (typos are the usual cause)."""
    if timm.is_model(name):
        arch, tag = split_model_name_tag(name)
        tagged = get_arch_pretrained_cfgs(arch)
        if tag and name not in tagged:
            raise ValueError(
                f"backbone {name!r}: {arch} has no pretrained tag {tag!r}; known: "
                f"{', '.join(sorted(tagged)) or 'none'} (model.pretrained_tag: one of these tags, or null for "
                "timm's default)"
            )
        return
    arch = split_model_name_tag(name)[0].lower()
    scored = [(difflib.SequenceMatcher(None, arch, m).ratio(), m) for m in timm.list_models()]
    # ties (efficientnet_b0..b8 for a one-letter typo) in name order: b0 before b8
    close = [m for score, m in sorted(scored, key=lambda s: (-s[0], s[1])) if score >= 0.6][:8]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown backbone {name!r}: not a timm model name{hint}")


def timm_name(backbone: str, tag: str | None = None) -> str:
    """``arch.tag`` as timm spells a tagged model (``backbone`` as given when ``tag`` is None)."""
    if tag is None:
        return backbone
    return f"{split_model_name_tag(backbone)[0]}.{tag}"


def resolve_pretrained_tag(backbone: str, tag: str | None = None) -> str | None:
    """The tag that building ``backbone`` with ``tag`` uses: ``tag``, the one in the name, or
    timm's default (its first registered) for the architecture; None for a name timm has no
    pretrained configurations for. Unknown names and tags are a ``ValueError``."""
    name = timm_name(backbone, tag)
    _check_name(name)
    arch, named = split_model_name_tag(name)
    if named:
        return named
    tags = list(get_arch_pretrained_cfgs(arch))
    return split_model_name_tag(tags[0])[1] if tags else None


def _hub_id(name: str) -> str:
    """The Hugging Face id timm would download ``name`` from, for the offline help text."""
    try:
        if "." in name:
            cfg = get_pretrained_cfg(name)
        else:
            cfgs = get_arch_pretrained_cfgs(name)
            cfg = next(iter(cfgs.values()), None)
    except RuntimeError:
        cfg = None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub_id or f"timm/{name}"


def _weights_path(weights: str | os.PathLike[str]) -> Path:
    """Validate a weights path: only existing ``.safetensors`` files are acceptable."""
    path = safetensors_path(weights, "model.weights", "'hub', 'none' or ")
    if not path.is_file():
        raise ValueError(f"model.weights={str(weights)!r}: file does not exist")
    return path


def _file_keys(path: Path) -> set[str]:
    """Tensor names in a safetensors file, read from its header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a valid safetensors file: {exc}") from None
    # timm strips a DataParallel 'module.' prefix when it loads; compare the same names
    return {k[len("module."):] if k.startswith("module.") else k for k in keys}


def _check_file_keys(model: nn.Module, name: str, path: Path, file_keys: set[str]) -> None:
    """Strict key matching for file weights.

    timm loads non-strictly when the classifier is dropped (``num_classes=0``), so a file for
    another architecture would load silently half-way; check the backbone keys ourselves.
    ``num_batches_tracked`` is bookkeeping, not weights, and may be absent from a conversion.
    """
    classifiers = model.pretrained_cfg.get("classifier") or ()
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    dropped = {f"{c}.{s}" for c in classifiers for s in ("weight", "bias")}
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in file_keys - dropped if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match backbone {name!r}: missing {len(missing)} keys "
            f"{missing[:10]}, unexpected {len(unexpected)} keys {unexpected[:10]}"
        )


def create_backbone(name: str, weights: str | os.PathLike[str] = "hub", tag: str | None = None,
                    drop_path: float = 0.0) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): ``forward`` gives pooled features.

    ``weights``: ``"hub"`` (pretrained, downloaded or cached), ``"none"`` (random init) or a
    path to a ``.safetensors`` file in timm's parameter names (its classifier, if any, is
    dropped). ``tag``: timm's pretrained tag (``in1k``...): the hub weights loaded, and the
    preprocessing of any weights (``model.pretrained_cfg["tag"]`` records it). Raises
    ``ValueError`` for unknown names, tags and bad paths and ``WeightsUnavailableError`` when
    the hub is needed but unreachable. ``drop_path``: timm's ``drop_path_rate`` (stochastic depth,
    Keras's drop-connect), for architectures that take it.
    """
    name = timm_name(name, tag)
    _check_name(name)
    extra: dict[str, Any] = {"drop_path_rate": drop_path} if drop_path else {}
    if weights == "none":
        logger.debug("backbone %s: random initialisation", name)
        return timm.create_model(name, pretrained=False, num_classes=0, **extra)
    if weights == "hub":
        from allwen.models import hub

        hub_id = _hub_id(name)
        cached = hub.cached_file(hub_id)
        why = None if cached else hub.unavailable()  # one quick check, not timm's minute of retries
        try:
            if cached:  # downloaded before: read from disk, the hub is not asked
                model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=cached),
                                          **extra)
            elif why:
                raise OSError(why)
            else:
                model = timm.create_model(name, pretrained=True, num_classes=0, **extra)
        except OSError:  # hf_hub/urllib/requests/httpx errors and offline mode are all OSErrors
            raise WeightsUnavailableError(
                f"pretrained weights for {name!r} are not cached and the model hub cannot be used "
                f"({why or 'the download failed'}): set `model.weights` to a local .safetensors file "
                f"(--set model.weights=/path/to/file.safetensors), downloaded where the hub is reachable "
                f"(timm name {name!r}, Hugging Face id {hub_id!r}: "
                f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors); or `model.weights: none` "
                "for random initialisation"
            ) from None
        except RuntimeError as exc:
            if "No pretrained weights exist" in str(exc):
                raise ValueError(
                    f"timm has no pretrained weights for {name!r}; set `model.weights: none` "
                    "or a .safetensors path"
                ) from None
            raise
        logger.info("backbone %s: pretrained weights from %s", name, "the local hub cache" if cached else "the hub")
        return model
    path = _weights_path(weights)
    file_keys = _file_keys(path)
    try:
        model = timm.create_model(
            name,
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay=dict(file=str(path)),
            **extra,
        )
    except RuntimeError as exc:  # shape mismatches: weights of another architecture/size
        raise ValueError(f"{path} does not fit backbone {name!r}: {exc}") from None
    _check_file_keys(model, name, path, file_keys)
    logger.info("backbone %s: weights from %s", name, path)
    return model


#: Keras applications' BatchNorm momentum in PyTorch's meaning (1 - Keras's) by EfficientNet family
#: (V1 0.99 -> 0.01; V2 0.9 -> 0.1). Their epsilon, 1e-3, is what timm's tf_* ports already use; a
#: backbone trained in PyTorch keeps the epsilon its running statistics were estimated with.
KERAS_BN_MOMENTUM = {"v1": 0.01, "v2": 0.1}
KERAS_BN_EPS = 1e-3


def keras_batchnorm(backbone: nn.Module, family: str | None) -> int:
    """Give ``backbone``'s BatchNorm layers Keras's momentum for ``family`` (see
    :func:`allwen.config.schema.keras_efficientnet`); returns how many layers were set (0 for None)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if family not in KERAS_BN_MOMENTUM:
        return 0
    layers = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    for layer in layers:
        layer.momentum = KERAS_BN_MOMENTUM[family]
    if any(layer.eps != KERAS_BN_EPS for layer in layers):
        logger.info("backbone BatchNorm epsilon %s kept (Keras: %s): the weights' statistics were estimated with it",
                    layers[0].eps, KERAS_BN_EPS)
    return len(layers)


def backbone_data_config(backbone: nn.Module) -> dict[str, Any]:
    """Input size, normalisation and interpolation the backbone's weights were trained with.

    JSON-ready (lists, not tuples): saved beside every checkpoint so that prediction
    preprocesses exactly as training did, without recreating the model from the hub.
    """
    config = resolve_model_data_config(backbone)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
