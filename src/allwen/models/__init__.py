"""Backbones, heads, activation swap, freezing and safetensors checkpoints."""

from allwen.models.activations import SeLU6, swap_expansion_activation
from allwen.models.backbones import (
    KNOWN_BACKBONES,
    WeightsUnavailableError,
    backbone_data_config,
    create_backbone,
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
    "save_tensors",
    "save_weights",
    "swap_expansion_activation",
    "trainable_parameters",
    "unfreeze_top",
]
