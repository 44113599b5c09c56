"""Train one unit (scenario x fold): stage 1 (frozen backbone), stage 2 (fine-tune), predict.

A unit folder holds everything later steps need, so ensembles and reports never run a
network again: ``weights.safetensors`` (+ ``data_config.json``), ``history.csv``,
``curves.png``, ``predictions_val.csv``, ``predictions_test.csv`` and, written last,
``unit.json`` (the marker that the unit is finished). The stages are their own steps
(:mod:`allwen.training.stages`); :func:`write_unit` is the one place that writes the files.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from allwen.config.schema import Config
from allwen.data.splits import Split
from allwen.data.table import ImageTable
from allwen.evaluation.metrics import compute_metrics
from allwen.failpoints import failpoint
from allwen.io import atomic_write, atomic_write_json
from allwen.bundle import PREPROCESSING_KEY, Preprocessing
from allwen.models import ClassifierModel, backbone_data_config, build_classifier, freeze_backbone, load_state, save_weights
from allwen.models.tta import tta_probabilities
from allwen.training.curves import plot_history
from allwen.training.feature_cache import FeatureCache, pretrained_tag
from allwen.training.inputs import DecodedImages, resolve_workers
from allwen.runfolder import UnitFolder
from allwen.threads import budget, limit_process, split_workers
from allwen.training.plan import last_stage_name as last_stage
from allwen.training.fit import run_stage1, run_stage2
from allwen.training.logs import quiet_lightning
from allwen.training.stages import (
    Reporter,
    StageResult,
    UnitContext,
    UnitData,
    image_forward,
    predict_rows,
    tta_from_features,
)
from allwen.training.task import resolve_class_weights

log = logging.getLogger(__name__)
quiet_lightning()
LARGE_ON_CPU = 10_000_000  # parameters: above this, training on CPU takes hours, say so


def unit_data(table: ImageTable, split: Split, fold: int) -> UnitData:
    train, val = split.folds[fold]
    return UnitData(list(table.frame["path"]), list(table.frame["sha256"]), table.label_indices(), train, val,
                    split.test, list(table.classes))


@dataclass
class RunCaches:
    """The run's caches (``RUN/cache/``): decoded images and frozen parts' outputs, shared
    by every unit; ``train_unit`` without one decodes and computes everything itself."""

    folder: Path

    @property
    def features(self) -> FeatureCache:
        return FeatureCache(self.folder / "features")

    def decoded(self, cfg: Config, norm: dict[str, Any], paths: list[str], hashes: list[str]) -> DecodedImages | None:
        """The decoded-image store holding ``hashes`` (decoding the missing ones), or None
        when the config turns it off or images keep their native size."""
        if not DecodedImages.usable(cfg.data):
            return None
        store = DecodedImages(self.folder / "decoded", cfg.data, norm)
        store.ensure(paths, hashes, resolve_workers(cfg.data.num_workers))
        return store


def select_device(accelerator: str, devices: int = 1) -> torch.device:
    """The unit's device; ``devices`` GPUs must be visible when it is a GPU (DDP, ``train.devices``)."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("train.accelerator=gpu but no CUDA device is visible; use auto or cpu")
    if accelerator in ("gpu", "auto") and torch.cuda.is_available():
        visible = torch.cuda.device_count()
        if devices > visible:
            raise ValueError(f"train.devices={devices} but {visible} CUDA device(s) visible; set train.devices to at "
                             "most that (or make more GPUs visible: CUDA_VISIBLE_DEVICES)")
        return torch.device("cuda")
    return torch.device("cpu")


def warn_if_slow(model: ClassifierModel, backbone: str, device: torch.device) -> None:
    n = sum(p.numel() for p in model.parameters())
    if device.type == "cpu" and n > LARGE_ON_CPU:
        log.warning("%s has %.1fM parameters and is about to train on CPU: expect hours per unit; "
                    "a CUDA GPU (train.accelerator: auto) or a smaller backbone is much faster", backbone, n / 1e6)


def _fresh_folder(unit_dir: Path) -> None:
    if unit_dir.exists():  # an interrupted unit: start it again from scratch
        shutil.rmtree(unit_dir)
    unit_dir.mkdir(parents=True)


def _finished(unit_dir: Path) -> dict[str, Any]:
    fix = f"delete {unit_dir} and run the same command again to retrain the unit"
    return UnitFolder(unit_dir).read_info(fix).model_dump(mode="json")


def unit_threads(cfg: Config) -> int:
    """Fix this process's threads for the unit: the budget (``--threads``, ``ALLWEN_THREADS``,
    a Ray task's CPUs) less its loader workers. CPU float results depend on the count, so
    ``unit.json`` records it (``threads``): the same count gives the same numbers anywhere."""
    threads = split_workers(budget(), cfg.data.num_workers)[0]
    limit_process(threads)
    return threads


def unit_context(cfg: Config, table: ImageTable, split: Split, fold: int, log_dir: Path,
                 caches: RunCaches | None, reporter: Reporter | None = None) -> UnitContext:
    """The model, data, device and caches one training uses."""
    # every unit starts from the same initial weights (so a random-init backbone is one
    # backbone, like a pretrained one, and the caches are shared); shuffling, dropout and
    # augmentation are seeded per fold
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    unit_threads(cfg)
    data = unit_data(table, split, fold)
    device = select_device(cfg.train.accelerator, cfg.train.devices)
    model = build_classifier(cfg.resolved_model(), len(table.classes))
    norm = backbone_data_config(model.backbone)
    freeze_backbone(model)
    warn_if_slow(model, cfg.model.backbone, device)
    rows = data.all_rows
    return UnitContext(
        cfg, data, model, norm, device,
        resolve_class_weights(cfg.train.class_weights, data.labels[data.train], len(table.classes)),
        cfg.train.seed + fold, log_dir, reporter,
        features=caches.features if caches is not None else None,
        decoded=caches.decoded(cfg, norm, [data.paths[i] for i in rows], [data.hashes[i] for i in rows]) if caches else None,
    )


def kept_model(ctx: UnitContext, done: list[StageResult]) -> tuple[StageResult, np.ndarray]:
    """``train.keep``: the model after the last epoch, or the best validation epoch's (loaded
    into ``ctx.model``); returns its stage and its validation probabilities."""
    if ctx.cfg.train.keep == "last":
        last = done[-1]
        val = last.last_val_proba if last.last_val_proba is not None else predict_rows(ctx, last, ctx.data.val)
        return last, val
    best = next((s for s in reversed(done) if s.best_state is not None), done[-1])
    if best.best_state is not None:
        load_state(ctx.model, best.best_state, "best weights")
    val = best.best_val_proba if best.best_val_proba is not None else predict_rows(ctx, best, ctx.data.val)
    return best, val


def train_unit(cfg: Config, table: ImageTable, split: Split, fold: int, unit_dir: Path,
               caches: RunCaches | None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train, keep the best (or last) weights, save weights and predictions."""
    if UnitFolder(unit_dir).done:
        return _finished(unit_dir)
    _fresh_folder(unit_dir)
    started = time.perf_counter()
    ctx = unit_context(cfg, table, split, fold, unit_dir / "logs", caches, reporter)
    stage1 = run_stage1(ctx)
    stage2 = run_stage2(ctx, stage1)
    done = [s for s in (stage1, stage2) if s is not None]
    kept, val_proba = kept_model(ctx, done)
    test_proba = predict_rows(ctx, kept, ctx.data.test)
    tta_proba = tta_test_proba(ctx, kept) if cfg.evaluation.tta else None
    return write_unit(ctx, unit_dir, done, kept, val_proba, test_proba, fold, time.perf_counter() - started, tta_proba,
                      train_eval(ctx, kept))


def train_eval(ctx: UnitContext, kept: StageResult) -> dict[str, Any]:
    """``train_eval_accuracy``: the kept model on its own training images in eval mode (no
    augmentation, dropout off, BatchNorm's running statistics) after training, as Keras's
    ``model.evaluate`` gives it and Experiment C tabulates; the running accuracy of the training
    batches (``train_metrics.accuracy``) is another number."""
    rows = ctx.data.train
    if len(rows) == 0:
        return {"train_eval_accuracy": None}
    proba = predict_rows(ctx, kept, rows)
    return {"train_eval_accuracy": float(compute_metrics(ctx.data.labels[rows], proba)["accuracy"])}


def tta_test_proba(ctx: UnitContext, kept: StageResult) -> np.ndarray:
    """``evaluation.tta``: the head alone on cached views' features when the backbone stayed
    frozen, else the whole model on the 8 dihedral views of each test image."""
    if kept.inputs.kind == "features" and ctx.features is not None:
        return tta_from_features(ctx, ctx.data.test)
    return predict_tta(ctx, ctx.data.test, image_forward(ctx, kept))


def train_epoch_grid(targets: list[tuple[Config, Path]], table: ImageTable, split: Split, fold: int,
                     caches: RunCaches | None, reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """Units that differ only in the last stage's epoch count (``keep: last``, no early
    stopping, a schedule blind to the total): one training to the largest count, each
    count's state and validation probabilities taken as it passes, each written as its own
    unit. Numbers equal separate trainings (the epochs before N do not know M > N follow)."""
    todo = [(c, d) for c, d in targets if not UnitFolder(d).done]
    if not todo:
        return [_finished(d) for _, d in targets]
    stage = last_stage(targets[0][0])
    counts = {getattr(c.train, stage).epochs for c, _ in targets}
    cfg = max(targets, key=lambda t: getattr(t[0].train, stage).epochs)[0]
    for _, unit_dir in todo:
        _fresh_folder(unit_dir)
    started = time.perf_counter()
    ctx = unit_context(cfg, table, split, fold, todo[0][1] / "logs", caches, reporter)
    stage1 = run_stage1(ctx, counts if stage == "stage1" else None)
    stage2 = run_stage2(ctx, stage1, counts if stage == "stage2" else None)
    done = [s for s in (stage1, stage2) if s is not None]
    final, seconds = done[-1], time.perf_counter() - started
    shared = [d.parent.name for _, d in targets]
    out = []
    for unit_cfg, unit_dir in targets:
        if UnitFolder(unit_dir).done:
            out.append(_finished(unit_dir))
            continue
        n = getattr(unit_cfg.train, stage).epochs
        state, val_proba = final.snapshots[n]
        load_state(ctx.model, state, f"weights after {n} epochs")
        kept = replace(final, history=final.history[:n], last_val_proba=val_proba)
        val_proba = val_proba if val_proba is not None else predict_rows(ctx, kept, ctx.data.val)
        test_proba = predict_rows(ctx, kept, ctx.data.test)
        tta_proba = tta_test_proba(ctx, kept) if unit_cfg.evaluation.tta else None
        out.append(write_unit(replace(ctx, cfg=unit_cfg), unit_dir, done[:-1] + [kept], kept, val_proba, test_proba,
                              fold, seconds, tta_proba, {"one_training_for": shared, **train_eval(ctx, kept)}))
    return out


@torch.no_grad()
def predict_tta(ctx: UnitContext, rows: np.ndarray, network: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """``evaluation.tta``: the model (``network``: normalised images -> logits, by default the
    whole model in PyTorch) on the 8 dihedral views of each image, probabilities averaged."""
    model = ctx.model.eval().to(ctx.device)
    network = network or model
    loader = DataLoader(ctx.images(np.asarray(rows)), batch_size=ctx.cfg.train.batch_size, num_workers=0)
    prep = ctx.prep(False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.probabilities(network(x).float())

    out = [tta_probabilities(forward, prep(x.to(ctx.device))).cpu() for x, _ in loader]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, model.num_classes))


def kept_epoch(best: StageResult, keep: str) -> dict[str, Any] | None:
    """The history row of the epoch whose weights the unit keeps (its training metrics are the
    ones Experiments B and C tabulate): the last epoch with ``keep: last``, else the best one."""
    if not best.history:
        return None
    if keep == "last" or best.best_epoch is None:
        return best.history[-1]
    # the epoch, not the score, names the row (Lightning logs scores as float32)
    return next((row for row in best.history if row["epoch"] == best.best_epoch), best.history[-1])


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def write_unit(ctx: UnitContext, unit_dir: Path, stages: list[StageResult], best: StageResult,
               val_proba: np.ndarray, test_proba: np.ndarray, fold: int, seconds: float,
               tta_proba: np.ndarray | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one place a unit's files are written; ``unit.json`` last (the finished marker).

    ``best`` is the stage whose weights the model holds: the best epoch's, or with
    ``train.keep: last`` the last epoch's (``best_val_score`` is then that epoch's)."""
    cfg, data, model, norm = ctx.cfg, ctx.data, ctx.model, ctx.norm
    classes = data.classes
    if cfg.train.keep == "last":
        best_stage = best.stage
        best_score = best.history[-1].get(f"val_{cfg.train.monitor}") if best.history else None
    else:
        best_stage = best.stage if best.best_state is not None else "none"
        best_score = best.best_score
    preprocessing = Preprocessing.of(cfg.data, norm).metadata()  # the one record predict and serve read back
    meta = {
        "classes": classes, "backbone": cfg.model.backbone, "pretrained_tag": pretrained_tag(model.backbone),
        "head": cfg.model.head, "activation": cfg.model.activation, "dropout": cfg.model.dropout,
        PREPROCESSING_KEY: preprocessing, "best_stage": best_stage,
        # Keras's layer constants (the head's BatchNorm epsilon changes its output) and the drop-path rate trained with
        "layer_defaults": cfg.resolved_model().layer_defaults, "drop_path": cfg.resolved_model().drop_path,
    }
    unit = UnitFolder(unit_dir)
    save_weights(model.cpu(), unit.weights, meta)
    atomic_write_json(unit.data_config, {**preprocessing, "classes": classes})
    hist = pd.DataFrame([row for s in stages for row in s.history])
    atomic_write(unit.history, lambda tmp: hist.to_csv(tmp, index=False))
    plot_history(hist, unit.curves, title=unit_dir.parent.name + "/" + unit_dir.name, monitor=cfg.train.monitor)
    test_paths = [data.paths[i] for i in data.test]
    unit.write_predictions("val", [data.paths[i] for i in data.val], data.labels[data.val], val_proba, classes)
    unit.write_predictions("test", test_paths, data.labels[data.test], test_proba, classes)
    if tta_proba is not None:  # evaluation.tta: the same test images, 8 dihedral views averaged
        unit.write_predictions("tta", test_paths, data.labels[data.test], tta_proba, classes)
    info = {k: v for s in stages for k, v in s.info.items()}
    kept = kept_epoch(best, cfg.train.keep)
    summary = {
        "fold": fold, "seed": ctx.seed, "best_stage": best_stage, "best_val_score": best_score,
        "pretrained_tag": meta["pretrained_tag"], "drop_path": meta["drop_path"], "layer_defaults": meta["layer_defaults"],
        "monitor": cfg.train.monitor, "epochs_run": {s: int((hist["stage"] == s).sum()) if len(hist) else 0 for s in ("stage1", "stage2")},
        "class_weights": None if ctx.class_weights is None else [float(w) for w in ctx.class_weights],
        "unfrozen_blocks": info.get("unfrozen_blocks", []), "feature_cache": info.get("stage1_inputs") == "features",
        "stage2_cache": info.get("stage2_inputs") == "frozen_part", "decode_cache": ctx.decoded is not None,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "seconds": round(seconds, 2), "device": str(ctx.device), "keep": cfg.train.keep,
        "threads": torch.get_num_threads(),
        # stages that ran out of GPU memory: the micro-batch their gradients were accumulated over
        "micro_batch": {s.stage: s.info[f"{s.stage}_micro_batch"] for s in stages if f"{s.stage}_micro_batch" in s.info},
        "train_devices": {s.stage: s.info.get(f"{s.stage}_devices", 1) for s in stages},
        # what ran each stage's frozen part, and whether its training images were augmented (issues 18, 20)
        "frozen_runtime": {s.stage: s.info.get(f"{s.stage}_runtime", "torch") for s in stages},
        "augmented": {s.stage: bool(s.info.get(f"{s.stage}_augmented", False)) for s in stages},
        "train_metrics": None if kept is None else {
            "stage": kept["stage"], "epoch": int(kept["epoch"]),
            **{name: _finite_or_none(kept.get(f"train_{name}")) for name in ("accuracy", "loss")}},
        "parameters": {"total": sum(p.numel() for p in model.parameters()),
                       **{f"{s.stage}_trainable": s.info.get(f"{s.stage}_trainable") for s in stages}},
        **(extra or {}),
    }
    failpoint("unit_files_written")
    # the fingerprints let evaluation refuse a file changed after the unit finished
    return unit.write_info(summary, tta=tta_proba is not None).model_dump(mode="json")
