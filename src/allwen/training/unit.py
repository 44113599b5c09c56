"""Train one unit (scenario x fold): stage 1 (frozen backbone), stage 2 (fine-tune), predict.

A unit folder holds everything later steps need, so ensembles and reports never run a
network again: ``weights.safetensors`` (+ ``data_config.json``), ``history.csv``,
``curves.png``, ``predictions_val.csv``, ``predictions_test.csv`` and, written last,
``unit.json`` (the marker that the unit is finished).
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from allwen.config.schema import Config, StageConfig
from allwen.data.splits import Split
from allwen.data.table import ImageTable
from allwen.data.transforms import ImageDataset, build_transform
from allwen.failpoints import failpoint
from allwen.io import atomic_write, atomic_write_json, read_json, record_files
from allwen.models import (
    ClassifierModel,
    backbone_data_config,
    build_classifier,
    freeze_backbone,
    load_state,
    save_weights,
    unfreeze_top,
)
from allwen.ensemble.build import TTA_TEST_FILE
from allwen.models.tta import tta_probabilities
from allwen.training.callbacks import BestWeights, EpochReporter, monitor_mode
from allwen.training.curves import plot_history
from allwen.training.feature_cache import FeatureCache, cache_key
from allwen.training.task import ClassifierTask, resolve_class_weights

log = logging.getLogger(__name__)
for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # one line per epoch is ours to print
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*small number of batches.*")
UNIT_DONE = "unit.json"
UNIT_FILES = ("weights.safetensors", "data_config.json", "predictions_val.csv", "predictions_test.csv")
Reporter = Callable[[str, int, int, dict[str, Any]], None]  # stage, epoch, max_epochs, metrics


@dataclass
class UnitData:
    """The rows a unit trains, validates and tests on."""

    paths: list[str]
    hashes: list[str]
    labels: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def from_split(cls, table: ImageTable, split: Split, fold: int) -> "UnitData":
        train, val = split.folds[fold]
        return cls(list(table.frame["path"]), list(table.frame["sha256"]), table.label_indices(), train, val, split.test)


def select_device(accelerator: str) -> torch.device:
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("train.accelerator=gpu but no CUDA device is visible; use auto or cpu")
    if accelerator in ("gpu", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _precision(setting: str, device: torch.device) -> str:
    if setting == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32-true"
    return "32-true" if setting == "32" else setting


def _logger(kind: str, folder: Path, stage: str):
    from lightning.pytorch import loggers

    if kind == "csv":
        return loggers.CSVLogger(save_dir=str(folder), name=stage, version=0)
    try:
        if kind == "tensorboard":
            return loggers.TensorBoardLogger(save_dir=str(folder), name=stage, version=0)
        return loggers.MLFlowLogger(experiment_name=stage, tracking_uri=f"file:{folder / 'mlruns'}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"train.logger={kind}: {exc.name} is not installed; pip install {exc.name} or use csv") from None


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fit_stage(task: ClassifierTask, train_loader: DataLoader, val_loader: DataLoader, stage: StageConfig,
               cfg: Config, device: torch.device, log_dir: Path, reporter: Reporter | None,
               start_score: float | None, seed: int) -> BestWeights:
    best = BestWeights(cfg.train.monitor, start_score=start_score)
    callbacks: list[pl.Callback] = [best]
    if stage.patience:
        callbacks.append(pl.callbacks.EarlyStopping(
            monitor=f"val_{cfg.train.monitor}", mode=monitor_mode(cfg.train.monitor), patience=stage.patience,
        ))
    if reporter is not None:
        callbacks.append(EpochReporter(lambda e, n, m: reporter(task.stage, e, n, m)))
    trainer = pl.Trainer(
        max_epochs=stage.epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=_precision(cfg.train.precision, device),
        logger=_logger(cfg.train.logger, log_dir, task.stage),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=("warn" if device.type == "cuda" else True) if cfg.train.deterministic else False,
    )
    # the same random state at every stage start, whether or not features came from the cache
    pl.seed_everything(seed + (0 if task.stage == "stage1" else 1000), workers=True, verbose=False)
    trainer.fit(task, train_dataloaders=train_loader, val_dataloaders=val_loader)
    return best


@torch.no_grad()
def predict_images(model: ClassifierModel, paths: list[str], cfg: Config, norm: dict[str, Any],
                   device: torch.device, tta: bool = False) -> np.ndarray:
    """Class probabilities for image files (no augmentation; ``tta``: mean of the 8 dihedral views)."""
    if not paths:
        return np.zeros((0, model.num_classes))
    model.eval().to(device)
    dataset = ImageDataset(paths, np.zeros(len(paths), dtype=np.int64), build_transform(cfg.data, norm, train=False))
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.probabilities(model(x).float())

    out = [(tta_probabilities(forward, x.to(device)) if tta else forward(x.to(device))).cpu() for x, _ in loader]
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def _predict_features(model: ClassifierModel, features: torch.Tensor) -> np.ndarray:
    model.eval()
    return model.probabilities(model.head_forward(features).float()).numpy().astype(np.float64)


def write_predictions(path: Path, paths: list[str], labels: np.ndarray, proba: np.ndarray, classes: list[str]) -> None:
    frame = pd.DataFrame({"path": paths, "y_true": labels})
    for k, name in enumerate(classes):
        frame[f"prob_{name}"] = proba[:, k]
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.8g"))


def train_unit(cfg: Config, table: ImageTable, split: Split, fold: int, unit_dir: Path,
               cache: FeatureCache | None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train, select the best weights by the validation metric, save weights and predictions."""
    if (unit_dir / UNIT_DONE).exists():
        return read_json(unit_dir / UNIT_DONE, f"delete {unit_dir} and run the same command again to retrain the unit")
    if unit_dir.exists():  # an interrupted unit: start it again from scratch
        shutil.rmtree(unit_dir)
    unit_dir.mkdir(parents=True)
    started = time.perf_counter()
    # every unit starts from the same initial weights (so a random-init backbone is one
    # backbone, like a pretrained one, and the feature cache is shared); shuffling, dropout
    # and augmentation are seeded per fold
    seed = cfg.train.seed + fold
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    data = UnitData.from_split(table, split, fold)
    classes = table.classes
    device = select_device(cfg.train.accelerator)
    model = build_classifier(cfg.model, len(classes))
    norm = backbone_data_config(model.backbone)
    class_weights = resolve_class_weights(cfg.train.class_weights, data.labels[data.train], len(classes))
    freeze_backbone(model)
    bs = cfg.train.batch_size
    y = torch.as_tensor(data.labels)

    def image_loader(rows: np.ndarray, train: bool, augment: bool) -> DataLoader:
        ds = ImageDataset([data.paths[i] for i in rows], data.labels[rows], build_transform(cfg.data, norm, train, augment))
        return DataLoader(ds, batch_size=bs, shuffle=train, generator=_generator(seed) if train else None,
                          num_workers=cfg.data.num_workers, persistent_workers=False)

    history: list[dict[str, Any]] = []
    best_score: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_stage = "none"
    features: dict[str, torch.Tensor] = {}
    used_cache = False
    stage1 = cfg.train.stage1
    if stage1.epochs > 0:
        used_cache = cache is not None and cfg.train.feature_cache and not cfg.train.stage1_augment
        if used_cache:
            rows = np.concatenate([data.train, data.val, data.test])
            key = cache_key(cfg.model, cfg.data, norm, cfg.train.seed)
            feats = cache.features(key, [data.paths[i] for i in rows], [data.hashes[i] for i in rows],
                                   model.backbone, cfg.data, norm, bs, device)
            n_tr, n_va = len(data.train), len(data.val)
            features = {"train": feats[:n_tr], "val": feats[n_tr:n_tr + n_va], "test": feats[n_tr + n_va:]}
            train_loader = DataLoader(TensorDataset(features["train"], y[data.train]), batch_size=bs, shuffle=True,
                                      generator=_generator(seed))
            val_loader = DataLoader(TensorDataset(features["val"], y[data.val]), batch_size=bs)
        else:
            train_loader = image_loader(data.train, True, cfg.train.stage1_augment)
            val_loader = image_loader(data.val, False, False)
        task = ClassifierTask(model, cfg.train, class_weights, stage1.epochs, len(train_loader),
                              on_features=used_cache, stage="stage1")
        best = _fit_stage(task, train_loader, val_loader, stage1, cfg, device, unit_dir / "logs", reporter, None, seed)
        history += task.history
        best_score, best_state, best_stage = best.best_score, best.best_state, "stage1"
        if best_state is not None:
            load_state(model, best_state, "best stage-1 weights")  # stage 2 starts from them

    stage2 = cfg.train.stage2
    unfrozen: list[str] = []
    if stage2 is not None and stage2.epochs > 0:
        unfrozen = unfreeze_top(model, cfg.train.unfreeze_blocks or float(cfg.train.unfreeze))
        train_loader = image_loader(data.train, True, cfg.data.augment != "none")
        val_loader = image_loader(data.val, False, False)
        task = ClassifierTask(model, cfg.train, class_weights, stage2.epochs, len(train_loader), stage="stage2")
        best = _fit_stage(task, train_loader, val_loader, stage2, cfg, device, unit_dir / "logs", reporter, best_score, seed)
        history += task.history
        if best.best_state is not None:
            best_score, best_state, best_stage = best.best_score, best.best_state, "stage2"
        if best_state is not None:
            load_state(model, best_state, "best weights")

    model.eval()
    if best_stage == "stage1" and used_cache:
        val_proba, test_proba = _predict_features(model, features["val"]), _predict_features(model, features["test"])
    else:
        val_proba = predict_images(model, [data.paths[i] for i in data.val], cfg, norm, device)
        test_proba = predict_images(model, [data.paths[i] for i in data.test], cfg, norm, device)

    meta = {
        "classes": classes, "backbone": cfg.model.backbone, "head": cfg.model.head,
        "activation": cfg.model.activation, "data_config": norm,
        "image_size": cfg.data.image_size, "clahe": cfg.data.clahe, "best_stage": best_stage,
    }
    save_weights(model.cpu(), unit_dir / "weights.safetensors", meta)
    atomic_write_json(unit_dir / "data_config.json", {**norm, "image_size": cfg.data.image_size, "classes": classes})
    hist = pd.DataFrame(history)
    atomic_write(unit_dir / "history.csv", lambda tmp: hist.to_csv(tmp, index=False))
    plot_history(hist, unit_dir / "curves.png", title=unit_dir.parent.name + "/" + unit_dir.name, monitor=cfg.train.monitor)
    write_predictions(unit_dir / "predictions_val.csv", [data.paths[i] for i in data.val], data.labels[data.val], val_proba, classes)
    write_predictions(unit_dir / "predictions_test.csv", [data.paths[i] for i in data.test], data.labels[data.test], test_proba, classes)
    if cfg.evaluation.tta:  # the same model on the 8 dihedral views of each test image, averaged
        tta_proba = predict_images(model, [data.paths[i] for i in data.test], cfg, norm, device, tta=True)
        write_predictions(unit_dir / TTA_TEST_FILE, [data.paths[i] for i in data.test], data.labels[data.test], tta_proba, classes)
    summary = {
        "fold": fold, "seed": seed, "best_stage": best_stage, "best_val_score": best_score,
        "monitor": cfg.train.monitor, "epochs_run": {s: int((hist["stage"] == s).sum()) if len(hist) else 0 for s in ("stage1", "stage2")},
        "class_weights": None if class_weights is None else [float(w) for w in class_weights],
        "unfrozen_blocks": unfrozen, "feature_cache": used_cache,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "seconds": round(time.perf_counter() - started, 2), "device": str(device),
    }
    # the fingerprints let evaluation refuse a file changed after the unit finished
    summary["files"] = record_files(unit_dir, UNIT_FILES)
    failpoint("unit_files_written")
    atomic_write_json(unit_dir / UNIT_DONE, summary)
    return summary
