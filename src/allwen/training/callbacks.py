"""Callbacks: keep the best weights in memory (saved later as safetensors), report progress.

Lightning's ModelCheckpoint writes pickled ``.ckpt`` files; allwen never unpickles a file a
user may hand over, so the best weights are tracked here and written with safetensors.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable

import lightning.pytorch as pl
import torch

from allwen.evaluation.metric_registry import metric

log = logging.getLogger(__name__)


def monitor_mode(name: str) -> str:
    """Whether ``train.monitor`` improves downwards (the loss) or as its metric says (the registry)."""
    return "min" if name == "loss" or not metric(name).higher_is_better else "max"


class BestWeights(pl.Callback):
    """Copy of the model's state, and the validation probabilities computed with it, at the
    best validation epoch (strict improvement)."""

    def __init__(self, monitor: str, start_score: float | None = None) -> None:
        self.monitor = f"val_{monitor}"
        self.mode = monitor_mode(monitor)
        self.best_score = start_score
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_val_proba: Any = None

    def _better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score < self.best_score if self.mode == "min" else score > self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if self._better(score):
            self.best_score, self.best_epoch = score, trainer.current_epoch
            if trainer.is_global_zero:  # under DDP rank 0 hands the unit its results
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()})
                self.best_val_proba = getattr(pl_module, "last_val_proba", None)


class EpochSnapshots(pl.Callback):
    """The model's state and validation probabilities after each epoch count in ``counts``
    (1-based): one training to the largest count gives every smaller count's model too."""

    def __init__(self, counts: set[int]) -> None:
        self.counts = set(counts)
        self.taken: dict[int, tuple[dict[str, torch.Tensor], Any]] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = trainer.current_epoch + 1
        if trainer.sanity_checking or n not in self.counts or not trainer.is_global_zero:
            return
        state = copy.deepcopy({k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()})
        self.taken[n] = (state, getattr(pl_module, "last_val_proba", None))


class EpochReporter(pl.Callback):
    """Calls ``report(epoch, max_epochs, metrics)`` after every validation (live progress)."""

    def __init__(self, report: Callable[[int, int, dict[str, Any]], None]) -> None:
        self.report = report
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val_", "train_"))}
        self.report(trainer.current_epoch, trainer.max_epochs or 0, metrics)
