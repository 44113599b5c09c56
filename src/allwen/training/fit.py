"""Fit a unit's stages: one device (:mod:`allwen.training.stages`) or DDP ranks
(:mod:`allwen.training.distributed`).

The dispatcher sits above both, so the single-device steps never import the distributed ones
and the distributed ones reuse the single-device steps without a circle.
"""

from __future__ import annotations

import logging

from allwen.config.schema import StageConfig
from allwen.models import load_state, unfreeze_top
from allwen.training.distributed import fit_distributed
from allwen.training.stages import (
    StageInputs,
    StageResult,
    UnitContext,
    fit_convex_stage,
    stage1_inputs,
    stage2_inputs,
    stage_info,
    train_stage,
)

log = logging.getLogger(__name__)


def fit_stage(ctx: UnitContext, name: str, stage: StageConfig, inputs: StageInputs,
              start_score: float | None, snapshot_epochs: set[int] | None = None) -> StageResult:
    """Train one stage; the best epoch's weights and validation probabilities are kept, the
    last epoch's validation probabilities too, and the state after each of ``snapshot_epochs``.
    With ``train.devices`` > 1 a stage on images or the frozen part trains with Lightning DDP
    (:mod:`allwen.training.distributed`); a head on cached features stays on one device."""
    devices = ctx.cfg.train.devices
    if devices > 1 and inputs.kind != "features":
        return fit_distributed(ctx, name, stage, inputs, start_score, snapshot_epochs)
    if devices > 1:
        log.info("%s: the head on cached features trains on one device (train.devices=%d applies to stages on "
                 "images or the frozen part; a head this small gains nothing from DDP)", name, devices)
    task, best, snapshots = train_stage(ctx, name, stage, inputs, start_score, snapshot_epochs)
    info = stage_info(ctx, name, inputs)
    if task.micro_batch is not None:  # out of GPU memory: gradients accumulated over smaller micro-batches
        info[f"{name}_micro_batch"] = task.micro_batch
    return StageResult(name, task.history, best.best_score, best.best_state, best.best_val_proba, inputs,
                       info, task.last_val_proba, snapshots.taken, best.best_epoch)


def run_stage1(ctx: UnitContext, snapshot_epochs: set[int] | None = None) -> StageResult | None:
    """The head on the frozen backbone: epochs of ``train.optimizer``, or the convex solver."""
    stage = ctx.cfg.train.stage1
    if stage.epochs == 0:
        return None
    if stage.solver == "lbfgs":
        if snapshot_epochs:
            raise ValueError("train.stage1.solver=lbfgs has no epochs: an epoch grid cannot vary train.stage1.epochs")
        return fit_convex_stage(ctx, "stage1", stage, stage1_inputs(ctx))
    return fit_stage(ctx, "stage1", stage, stage1_inputs(ctx), None, snapshot_epochs)


def run_stage2(ctx: UnitContext, previous: StageResult | None,
               snapshot_epochs: set[int] | None = None) -> StageResult | None:
    """Fine-tune the top blocks, from the best stage-1 weights (must beat stage 1's best), or
    with ``train.keep: last`` from stage 1's last ones."""
    train = ctx.cfg.train
    stage = train.stage2
    if stage is None or stage.epochs == 0:
        return None
    keep_best = train.keep == "best"
    if keep_best and previous is not None and previous.best_state is not None:
        load_state(ctx.model, previous.best_state, "best stage-1 weights")
    unfrozen = unfreeze_top(ctx.model, train.unfreeze_blocks or float(train.unfreeze))
    start = previous.best_score if previous is not None and keep_best else None
    result = fit_stage(ctx, "stage2", stage, stage2_inputs(ctx), start, snapshot_epochs)
    result.info["unfrozen_blocks"] = unfrozen
    return result
