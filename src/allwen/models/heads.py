"""Classification heads by name and the backbone + head model the trainer fits.

timm supplies backbones; the heads of the experiments are small and specific, so they live
in a registry here: A (one sigmoid unit), B (softmax), C (BatchNorm-Dense256-Dropout), D (Dense-ReLU-Dense,
N(0, 1/n_in) initialisation; or as its paper writes it, one FC layer to the classes then ReLU), E (Dense128). The backbone's global average pooling comes first in every case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from allwen.config.choices import HEAD_NAMES, check_registry
from allwen.models.activations import apply_activation
from allwen.models.backbones import create_backbone, keras_batchnorm

if TYPE_CHECKING:
    from allwen.config.schema import ModelConfig

logger = logging.getLogger(__name__)

HeadBuilder = Callable[[int, int, float], nn.Module]


def _sigmoid_head(in_features: int, num_classes: int, dropout: float) -> nn.Module:
    """Experiment A: one logit for the positive class; only meaningful for two classes."""
    if num_classes != 2:
        raise ValueError(
            f"head 'sigmoid' gives one probability, so it needs exactly 2 classes, not "
            f"{num_classes}; use head 'softmax' (or an mlp head) for {num_classes} classes"
        )
    # dropout before the dense unit as in the Keras transfer-learning recipe; always present
    # (p may be 0) so the state-dict keys do not depend on the dropout setting
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1))


def _softmax_head(in_features: int, num_classes: int, dropout: float) -> nn.Module:
    """Experiment B: one logit per class."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


def _mlp256_head(in_features: int, num_classes: int, dropout: float) -> nn.Module:
    """Experiment C: BatchNorm -> Dense(256, ReLU) -> Dropout -> Dense(K)."""
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Linear(in_features, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(256, num_classes),
    )


def _mlp128_head(in_features: int, num_classes: int, dropout: float) -> nn.Module:
    """Experiment E: Dense(128, ReLU) -> Dense(K); no dropout in the published design."""
    del dropout
    return nn.Sequential(
        nn.Linear(in_features, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


def _fc_relu_head(in_features: int, num_classes: int, dropout: float, width: int = 256) -> nn.Module:
    """Experiment D: Dense(width) -> ReLU -> Dense(K) softmax, weights drawn from N(0, 1/n_in).

    The paper initialises its fully connected layers with variance 1/n_in (LeCun normal) and
    zero biases; ``width`` is not stated in the paper (``model.head_width``).
    """
    head = nn.Sequential(
        nn.Linear(in_features, width),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(width, num_classes),
    )
    for layer in (head[0], head[3]):
        nn.init.normal_(layer.weight, mean=0.0, std=layer.in_features ** -0.5)
        nn.init.zeros_(layer.bias)
    return head


def _fc_relu_softmax_head(in_features: int, num_classes: int, dropout: float) -> nn.Module:
    """Experiment D's head as the paper writes it: GAP -> one FC layer to the classes -> ReLU ->
    softmax (the softmax is in the loss and ``probabilities``), weights from N(0, 1/n_in), zero
    biases. The ReLU clips the class scores at 0 before the softmax, as written."""
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes), nn.ReLU())
    nn.init.normal_(head[1].weight, mean=0.0, std=in_features ** -0.5)
    nn.init.zeros_(head[1].bias)
    return head


#: heads whose initialisation is their paper's own (D: N(0, 1/n_in)); Keras's glorot_uniform does not replace it
OWN_INIT_HEADS = ("fc_relu", "fc_relu_softmax")
#: Keras's BatchNormalization defaults in PyTorch's meaning (momentum 1 - 0.99)
KERAS_HEAD_BN = {"momentum": 0.01, "eps": 1e-3}


def keras_head(head: nn.Module, name: str) -> nn.Module:
    """Keras's layer defaults on a head: Dense layers glorot_uniform with zero bias (unless the head
    has its paper's own init), BatchNorm momentum 0.99 (Keras's meaning) and epsilon 1e-3."""
    for module in head.modules():
        if isinstance(module, nn.Linear) and name not in OWN_INIT_HEADS:
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum, module.eps = KERAS_HEAD_BN["momentum"], KERAS_HEAD_BN["eps"]
    return head


HEADS: dict[str, HeadBuilder] = {
    "sigmoid": _sigmoid_head,
    "softmax": _softmax_head,
    "mlp256": _mlp256_head,
    "mlp128": _mlp128_head,
    "fc_relu": _fc_relu_head,
    "fc_relu_softmax": _fc_relu_softmax_head,
}
check_registry("heads", HEADS, HEAD_NAMES)
WIDTH_HEADS = ("fc_relu",)  # heads whose hidden width is model.head_width


def build_head(name: str, in_features: int, num_classes: int, dropout: float = 0.0, width: int | None = None,
               keras: bool = False) -> nn.Module:
    """The head registered as ``name`` for ``in_features`` pooled features and K classes
    (``keras``: Keras's init and BatchNorm constants, :func:`keras_head`)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known heads: {', '.join(sorted(HEADS))}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), not {dropout}")
    if name in WIDTH_HEADS and width is not None:
        head = HEADS[name](in_features, num_classes, dropout, width)
    else:
        head = HEADS[name](in_features, num_classes, dropout)
    return keras_head(head, name) if keras else head


class ClassifierModel(nn.Module):
    """Backbone (pooled features) followed by a head; the unit of two-stage training.

    Backbone and head are separate attributes so that stage 1 can freeze the backbone (and
    cache its features, see ``features``/``head_forward``) and stage 2 can unfreeze its top.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, head_name: str, num_classes: int):
        super().__init__()
        if head_name not in HEADS:
            raise ValueError(f"unknown head {head_name!r}; known heads: {', '.join(sorted(HEADS))}")
        self.backbone = backbone
        self.head = head
        self.head_name = head_name
        self.num_classes = num_classes

    @property
    def is_sigmoid(self) -> bool:
        """One-logit head: probabilities and loss are binary."""
        return self.head_name == "sigmoid"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, shape (n, in_features)."""
        return self.backbone(x)

    def head_forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from (possibly cached) features."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: (n, 1) for the sigmoid head, (n, K) otherwise."""
        return self.head_forward(self.features(x))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities, always (n, K), whatever the head, for uniform evaluation."""
        if self.is_sigmoid:
            positive = torch.sigmoid(logits.reshape(-1))
            return torch.stack([1.0 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        class_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class-weighted loss for integer ``targets``.

        Both kinds use the weighted mean ``sum(w_i * l_i) / sum(w_i)`` (CrossEntropy's
        convention), so a sigmoid head and a two-class softmax head with the same logit
        difference get the same loss and learning rates stay comparable between experiments.
        """
        targets = targets.long()
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
            if weights.numel() != self.num_classes:
                raise ValueError(
                    f"{weights.numel()} class weights for a {self.num_classes}-class model"
                )
        if self.is_sigmoid:
            per_sample = F.binary_cross_entropy_with_logits(
                logits.reshape(-1), targets.to(logits.dtype), reduction="none"
            )
            if weights is None:
                return per_sample.mean()
            sample_weights = weights[targets]
            return (per_sample * sample_weights).sum() / sample_weights.sum()
        return F.cross_entropy(logits, targets, weight=weights)


def build_classifier(cfg: ModelConfig, num_classes: int) -> ClassifierModel:
    """Backbone with the configured weights, drop-path and optional SeLU6 swap, and the configured
    head; ``layer_defaults: keras`` gives both Keras's BatchNorm constants and the head Keras's init.
    Pass ``Config.resolved_model()`` (null drop_path/layer_defaults mean 0 and torch here)."""
    from allwen.config.schema import keras_efficientnet

    keras = cfg.layer_defaults == "keras"
    backbone = create_backbone(cfg.backbone, cfg.weights, cfg.pretrained_tag, drop_path=cfg.drop_path or 0.0)
    if keras:
        keras_batchnorm(backbone, keras_efficientnet(cfg.backbone))
    apply_activation(backbone, cfg.activation)
    in_features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    head = build_head(cfg.head, in_features, num_classes, cfg.dropout, cfg.head_width, keras=keras)
    logger.debug(
        "classifier: %s (%d features) + %s head, %d classes",
        cfg.backbone, in_features, cfg.head, num_classes,
    )
    return ClassifierModel(backbone, head, cfg.head, num_classes)


def keras_parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters as Keras's ``model.summary()`` counts them: BatchNorm's moving mean and variance are
    non-trainable parameters there (buffers in PyTorch). ``total = trainable + non_trainable``; the
    statistics alone are ``batchnorm_statistics`` (Experiment E's table: 2,422,468 = 164,484 trainable
    + 2,257,984 non-trainable, of which 34,112 are MobileNetV2's BatchNorm statistics)."""
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    frozen_stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                       if type(m).__name__.startswith("FrozenBatchNorm"))
    params = sum(p.numel() for p in model.parameters())
    frozen_affine = sum(m.weight.numel() + m.bias.numel() for m in model.modules()
                        if type(m).__name__.startswith("FrozenBatchNorm"))  # buffers once frozen, parameters in Keras
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = params + frozen_affine + stats + frozen_stats
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable,
            "batchnorm_statistics": stats + frozen_stats}
