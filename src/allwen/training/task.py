"""The Lightning module that trains a classifier (or only its head, on cached features)."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch

from allwen.config.schema import TrainConfig
from allwen.evaluation.metric_registry import selectable_names
from allwen.evaluation.metrics import compute_metrics
from allwen.models import ClassifierModel, trainable_parameters
from allwen.training.microbatch import accumulate, halved, is_oom, oom_failpoint


def history_metrics() -> tuple[str, ...]:
    """The validation metrics an epoch's history records: accuracy, balanced accuracy and every metric
    ``train.monitor`` may name (the metric registry's selectable ones)."""
    return tuple(dict.fromkeys(("accuracy", "balanced_accuracy", *selectable_names())))


OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}
#: Keras's constants where they differ from torch's (``train.optimizer_defaults: keras``): the studies
#: ran on Keras. Its RMSprop and Adam also compute differently (eps inside the square root; eps on
#: the uncorrected second moment), so keras builds :mod:`allwen.training.keras_optimizers`' classes.
KERAS_DEFAULTS: dict[str, dict[str, float]] = {
    "adam": {"eps": 1e-7},
    "adamw": {"eps": 1e-7},
    "rmsprop": {"rho": 0.9, "eps": 1e-7},
    "sgd": {},
}


def _keras_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    from allwen.training.keras_optimizers import KerasAdam, KerasRMSprop

    # Keras's Adam and AdamW are one formula; their weight decay is decoupled (Keras 3) in both
    return {"adam": KerasAdam, "adamw": KerasAdam, "rmsprop": KerasRMSprop, "sgd": torch.optim.SGD}


def optimizer_options(cfg: TrainConfig) -> dict[str, float]:
    """The keyword arguments of ``cfg.optimizer`` besides the parameters: lr, weight decay, the
    ``optimizer_defaults`` family's constants and (sgd) the momentum."""
    options: dict[str, float] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer_defaults == "keras":
        options |= KERAS_DEFAULTS[cfg.optimizer]
    if cfg.optimizer == "sgd":
        options["momentum"] = cfg.momentum
    return options


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """PyTorch's optimizer of ``cfg.optimizer``, or under ``optimizer_defaults: keras`` Keras's
    arithmetic for RMSprop and Adam/AdamW (SGD is the same formula in both)."""
    family = _keras_optimizers() if cfg.optimizer_defaults == "keras" else OPTIMIZERS
    return family[cfg.optimizer](params, **optimizer_options(cfg))


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """n_samples / (n_classes * n_class_samples), computed on the training fold only.

    The same rule as scikit-learn's ``compute_class_weight("balanced")``; a class absent from
    the fold is an error because its weight would be infinite.
    """
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"training fold has no images of class index {missing}; cannot weight the loss")
    return len(labels) / (n_classes * counts.astype(np.float64))


def resolve_class_weights(setting: str | list[float], labels: np.ndarray, n_classes: int) -> np.ndarray | None:
    if setting == "none":
        return None
    if setting == "balanced":
        return balanced_class_weights(labels, n_classes)
    weights = np.asarray(setting, dtype=np.float64)
    if weights.shape != (n_classes,) or (weights <= 0).any():
        raise ValueError(f"train.class_weights: need {n_classes} positive numbers, got {setting!r}")
    return weights


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, epochs: int):
    """Per-step schedules: exponential decay (TF-style steps/rate) or cosine to zero."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "exponential":
        fn = lambda step: cfg.decay_rate ** (step / cfg.decay_steps)  # noqa: E731
    else:
        total = max(1, steps_per_epoch * max(1, epochs))
        fn = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


class ClassifierTask(pl.LightningModule):
    """Trains the parameters ``params`` of ``model`` with ``forward`` (batch -> logits).

    ``forward`` is the whole model on images, the head on cached pooled features, or the
    unfrozen top + head on the frozen part's cached output; ``prep`` turns the uint8 image
    batch into the network's input on the device (augmentation only while training).
    Validation metrics are computed on the whole validation fold at epoch end (not averaged
    over batches), so accuracy / F1 / kappa / AUC are the real fold values; the fold's
    probabilities of the last validation are kept (``last_val_proba``) so the best epoch's
    can be saved as they were computed. Nothing syncs with the host per step.

    Under DDP (``val_shard``: this rank's padded positions of the validation fold and the fold's
    size) every rank validates rank 0's model on its shard, the shards are gathered and put
    back in order (:func:`merge_shards`), and the metrics, the loss (per ``val_batch_size``
    batch, as one device computes it) and the training aggregates are computed from all ranks'
    rows, so every rank logs the same numbers and early stopping agrees.
    """

    def __init__(self, model: ClassifierModel, cfg: TrainConfig, class_weights: np.ndarray | None,
                 epochs: int, steps_per_epoch: int, stage: str = "stage1",
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 params: list[torch.nn.Parameter] | None = None,
                 prep: tuple[Callable | None, Callable | None] = (None, None),
                 val_batch_size: int | None = None, val_shard: tuple[np.ndarray, int] | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.stage = stage
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._forward = forward or model
        self._params = params
        self._prep_train, self._prep_eval = prep
        self.val_batch_size = val_batch_size
        self.val_shard = val_shard
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.history: list[dict[str, Any]] = []
        self.last_val_proba: np.ndarray | None = None
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._loss_sum: torch.Tensor | None = None
        self._loss_n = 0
        self._train_probs: list[torch.Tensor] = []
        self._train_labels: list[torch.Tensor] = []
        self._epoch_start = time.perf_counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        prep = self._prep_train if self.trainer.training else self._prep_eval
        return (prep(x) if prep is not None else x), y

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._loss_sum, self._loss_n = None, 0
        self._train_probs, self._train_labels = [], []

    def training_step(self, batch, batch_idx):
        x, y = batch
        while True:  # out of GPU memory: halve the micro-batch, accumulate (allwen.training.microbatch)
            try:
                loss, detached, logits = self._step(x, y)
                break
            except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is retried
                self._after_oom(exc, len(y))
        self._batch = (x, y)  # backward may run out of memory too: it redoes the batch in parts
        # Lightning zeroes the gradients between this step and its backward: the micro-batches'
        # gradients so far wait here and join in :meth:`backward`
        self._stash = {p: p.grad for p in self.parameters() if p.grad is not None} if self.micro_parts > 1 else {}
        for p in self._stash:
            p.grad = None
        # the training batches' predictions as trained (augmented, dropout on), like Keras' accuracy
        self._train_probs.append(self.model.probabilities(logits.detach().float()))
        self._train_labels.append(y.detach())
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_n += 1
        self.log("train_loss", detached, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=self._distributed)
        return loss

    micro_parts = 1  # micro-batches per batch; doubles at each out-of-memory error

    def _step(self, x: torch.Tensor, y: torch.Tensor):
        """The batch's loss (its graph: the caller's backward), loss value and logits."""
        if self.micro_parts == 1:
            oom_failpoint(len(y))
            logits = self(x)
            loss = self.model.loss(logits, y, self.class_weights)
            return loss, loss.detach(), logits  # the value stays on the device: no host sync per step
        for p in self.parameters():  # the last step's gradients (Lightning zeroes them only after this step)
            p.grad = None
        return accumulate(self, self.model.loss, x, y, self.micro_parts, self.class_weights)

    def _after_oom(self, exc: BaseException, batch: int) -> None:
        if not is_oom(exc):
            raise exc
        for p in self.parameters():  # drop what the failed try accumulated
            p.grad = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.micro_parts = halved(self.micro_parts, batch, self.stage, exc)

    @property
    def micro_batch(self) -> int | None:
        """The micro-batch trained with when smaller than the batch (for ``unit.json``)."""
        return None if self.micro_parts == 1 else -(-self.cfg.batch_size // self.micro_parts)

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        stash, self._stash = getattr(self, "_stash", {}), {}
        try:
            super().backward(loss, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is retried
            x, y = self._batch
            while True:
                self._after_oom(exc, len(y))
                try:
                    last, _, _ = accumulate(self, self.model.loss, x, y, self.micro_parts, self.class_weights)
                    last.backward()
                    return
                except Exception as again:  # noqa: BLE001
                    exc = again
        for p, grad in stash.items():  # the earlier micro-batches' gradients
            p.grad = grad if p.grad is None else p.grad + grad

    @property
    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def on_validation_epoch_start(self) -> None:
        if self._distributed:
            # each rank's BatchNorm statistics saw its own last batch: every rank validates rank 0's
            # model (DDP's pre-forward buffer sync does this too today; explicit, it does not rest on it)
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._val_logits.append(self(x).detach().float())
        self._val_labels.append(y.detach())

    def _whole_fold(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation fold's rows in split order: as they are on one device, gathered from
        every rank's shard (padding dropped) under DDP."""
        if self.val_shard is None:
            return logits, labels
        from allwen.training.shards import merge_shards

        positions, n = self.val_shard
        gathered = self.all_gather(torch.as_tensor(positions, device=logits.device))
        return merge_shards(self.all_gather(logits), gathered, n), merge_shards(self.all_gather(labels), gathered, n)

    def _fold_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        """Mean of the per-batch losses weighted by batch size (Lightning's epoch mean on one device)."""
        size = self.val_batch_size or len(labels)
        total = sum(self.model.loss(logits[i:i + size], labels[i:i + size], self.class_weights) * len(labels[i:i + size])
                    for i in range(0, len(labels), size))
        return float(total) / len(labels)

    def on_validation_epoch_end(self) -> None:
        if not self._val_logits:
            return
        logits, labels_t = self._whole_fold(torch.cat(self._val_logits), torch.cat(self._val_labels))
        self._val_logits, self._val_labels = [], []
        proba = self.model.probabilities(logits).cpu().numpy().astype(np.float64)
        labels = labels_t.cpu().numpy()
        self.last_val_proba = proba
        val_loss = self._fold_loss(logits, labels_t)
        metrics = compute_metrics(labels, proba)
        self.log("val_loss", val_loss)
        for name in selectable_names():  # what train.monitor may name
            value = metrics[name]
            self.log(f"val_{name}", float(value) if value == value else 0.0, prog_bar=False)
        if self.trainer.sanity_checking:
            return
        train_loss = self._train_loss()
        self.history.append({
            "stage": self.stage,
            "epoch": self.current_epoch,
            "train_loss": train_loss,
            **self._train_metrics(),
            "val_loss": val_loss,
            **{f"val_{k}": float(metrics[k]) for k in history_metrics()},
            "lr": float(self.optimizers().param_groups[0]["lr"]) if self.trainer.optimizers else float("nan"),
            "seconds": round(time.perf_counter() - self._epoch_start, 3),
        })

    def _train_loss(self) -> float:
        """Mean of the epoch's batch losses (under DDP over every rank's batches: all run as many)."""
        if not self._loss_n:
            return float("nan")
        total = self._loss_sum
        if self._distributed:
            total = self.trainer.strategy.reduce(total, reduce_op="mean")
        return float(total) / self._loss_n

    def _all_ranks(self, values: torch.Tensor) -> torch.Tensor:
        return self.all_gather(values).flatten(0, 1) if self._distributed else values

    def _train_metrics(self) -> dict[str, float]:
        """Accuracy (and the monitored metric) of the epoch's training batches; one host sync per epoch."""
        names = ["accuracy"] + ([self.cfg.monitor] if self.cfg.monitor not in ("accuracy", "loss") else [])
        if not self._train_probs:
            return {f"train_{k}": float("nan") for k in names}
        # under DDP: every rank's batches, the <= devices - 1 padding repeats included (they were trained on)
        proba = self._all_ranks(torch.cat(self._train_probs)).cpu().numpy().astype(np.float64)
        labels = self._all_ranks(torch.cat(self._train_labels)).cpu().numpy()
        metrics = compute_metrics(labels, proba)
        return {f"train_{k}": float(metrics[k]) for k in names}

    def configure_optimizers(self):
        params = self._params if self._params is not None else trainable_parameters(self.model)
        opt = build_optimizer(list(params), self.cfg)
        scheduler = build_scheduler(opt, self.cfg, self.steps_per_epoch, self.epochs)
        if scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
