"""Backbones, heads, activation swap, freezing and safetensors checkpoints."""

from allwen.models.activations import SeLU6, apply_activation, swap_expansion_activation, swap_paper_activations
from allwen.models.backbones import (
    KNOWN_BACKBONES,
    WeightsUnavailableError,
    backbone_data_config,
    create_backbone,
    resolve_pretrained_tag,
    timm_name,
)
from allwen.models.freeze import (
    backbone_blocks,
    FrozenSplit,
    freeze_backbone,
    frozen_split,
    trainable_parameters,
    unfreeze_top,
)
from allwen.models.heads import HEADS, ClassifierModel, build_classifier, build_head
from allwen.models.weights_io import load_state, load_tensors, load_weights, read_metadata, save_tensors, save_weights

__all__ = [
    "HEADS",
    "KNOWN_BACKBONES",
    "ClassifierModel",
    "SeLU6",
    "apply_activation",
    "WeightsUnavailableError",
    "backbone_blocks",
    "backbone_data_config",
    "build_classifier",
    "build_head",
    "create_backbone",
    "FrozenSplit",
    "freeze_backbone",
    "frozen_split",
    "load_state",
    "load_tensors",
    "load_weights",
    "read_metadata",
    "resolve_pretrained_tag",
    "save_tensors",
    "save_weights",
    "swap_expansion_activation",
    "swap_paper_activations",
    "timm_name",
    "trainable_parameters",
    "unfreeze_top",
]
