"""The two training stages of a unit, each its own step: choose inputs, fit, keep the best.

A stage is (inputs, fit): :func:`stage1_inputs` / :func:`stage2_inputs` decide what the
network is fed (images, cached pooled features, or the frozen part's cached output) and
:func:`fit_stage` trains on any of them, returning a :class:`StageResult` that knows how to
predict further rows the same way. New ways to train a stage (another solver, other inputs)
are another inputs builder or another fit, not another branch in ``train_unit``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from allwen.config.schema import Config, StageConfig
from allwen.models import ClassifierModel, frozen_split
from allwen.models.runtime import OPSET, FrozenForward, frozen_forward, resolve_runtime, torch_forward
from allwen.training.callbacks import BestWeights, EpochReporter, EpochSnapshots, monitor_mode
from allwen.training.feature_cache import FeatureCache, cache_key, pretrained_tag
from allwen.data.transforms import DIHEDRAL_VIEWS
from allwen.training.inputs import (
    BatchPrep,
    DecodedImages,
    ImageRows,
    RowTensors,
    ViewSampler,
    frozen_pass,
    image_loader,
    tensor_loader,
    views_for,
)
from allwen.training.task import ClassifierTask, history_metrics

log = logging.getLogger(__name__)
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
    classes: list[str]

    @property
    def all_rows(self) -> np.ndarray:
        return np.concatenate([self.train, self.val, self.test])


@dataclass
class UnitContext:
    """What both stages of one unit share."""

    cfg: Config
    data: UnitData
    model: ClassifierModel
    norm: dict[str, Any]
    device: torch.device
    class_weights: np.ndarray | None
    seed: int
    log_dir: Path
    reporter: Reporter | None = None
    features: FeatureCache | None = None
    decoded: DecodedImages | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def eval_batch_size(self) -> int:
        return self.cfg.train.eval_batch_size or 2 * self.cfg.train.batch_size

    @property
    def autocast(self) -> bool:
        return self.on_gpu and precision(self.cfg.train.precision, self.device) == "bf16-mixed"

    def images(self, rows: np.ndarray) -> ImageRows:
        """uint8 images of ``rows``: from the decoded store, or decoded from the files."""
        labels = self.data.labels[rows]
        if self.decoded is not None:
            return ImageRows(labels, stored=self.decoded.source([self.data.hashes[i] for i in rows]))
        return ImageRows(labels, paths=[self.data.paths[i] for i in rows], data=self.cfg.data, norm=self.norm)

    def prep(self, augment: bool) -> BatchPrep:
        return BatchPrep(self.cfg.data, self.norm, augment, channels_last=self.on_gpu)

    @property
    def runtime(self) -> str:
        """``train.frozen_runtime`` resolved for this unit's device (auto: onnxruntime on CPU)."""
        return resolve_runtime(self.cfg.train.frozen_runtime, self.device)

    @property
    def exports(self) -> Path | None:
        """``RUN/cache/frozen_runtime/``: the frozen parts exported for the runtime, by key."""
        return None if self.features is None else self.features.folder.parent / "frozen_runtime"

    def part_key(self, **part: Any) -> str:
        """The cache key of a frozen part's output (or, with ``export``, of its exported graph)."""
        cfg = self.cfg
        return cache_key(cfg.model, cfg.data, self.norm, cfg.train.seed, pretrained_tag(self.model.backbone), **part)

    def frozen(self, module: torch.nn.Module, rows: np.ndarray, what: str, **part: Any) -> FrozenForward:
        """``module`` (a frozen part) through the run's frozen runtime: exported once under the
        part's key, checked against PyTorch on the first images of ``rows`` before use."""
        runtime = self.runtime
        if runtime == "torch" or self.exports is None or len(rows) == 0:
            return torch_forward(module, self.autocast)
        key = self.part_key(export=f"onnx-opset{OPSET}", torch=torch.__version__.split("+")[0], **part)
        images = self.images(np.asarray(rows[:4]))
        sample = self.prep(False)(torch.stack([images[i][0] for i in range(len(images))]))
        return frozen_forward(module, runtime, self.exports / f"{key}.onnx", sample,
                              low_precision=self.cfg.train.frozen_precision == "low", what=what,
                              autocast=self.autocast)

    def runtime_key(self, runtime: str) -> dict[str, Any]:
        """What of the runtime a cached output's key holds (precision only when lowered)."""
        low = runtime != "torch" and self.cfg.train.frozen_precision == "low"
        return {"runtime": runtime, **({"precision": "low"} if low else {})}


@dataclass
class StageInputs:
    """How a stage feeds the network: loaders, forward, trainable parameters, batch preparation."""

    kind: str  # images | features | frozen_part
    train: DataLoader
    val: DataLoader
    forward: Callable[[torch.Tensor], torch.Tensor]
    params: list[torch.nn.Parameter] | None
    prep: tuple[BatchPrep | None, BatchPrep | None]
    loader_for: Callable[[np.ndarray], DataLoader]  # more rows, fed the same way (no augmentation)
    runtime: str = "torch"  # what ran the frozen part: torch, onnxruntime, openvino
    augmented: bool = False  # the training images were augmented


@dataclass
class StageResult:
    stage: str
    history: list[dict[str, Any]]
    best_score: float | None
    best_state: dict[str, torch.Tensor] | None
    best_val_proba: np.ndarray | None
    inputs: StageInputs
    info: dict[str, Any] = field(default_factory=dict)
    last_val_proba: np.ndarray | None = None  # after the final epoch (train.keep: last)
    snapshots: dict[int, tuple[dict[str, torch.Tensor], np.ndarray | None]] = field(default_factory=dict)
    best_epoch: int | None = None  # the history epoch of best_state (None: no epoch improved)


def precision(setting: str, device: torch.device) -> str:
    if setting == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32-true"
    return "32-true" if setting == "32" else setting


# -- inputs ------------------------------------------------------------------------------

def image_inputs(ctx: UnitContext, augment: bool, frozen: Callable[[], tuple[Callable, FrozenForward]] | None = None,
                 params: list[torch.nn.Parameter] | None = None) -> StageInputs:
    """Images through the whole model (the uncached route); only trainable parameters train.

    ``frozen`` builds (forward, frozen part) when the frozen part can run in the frozen runtime:
    each (augmented) batch then goes through the frozen part there and the rest in PyTorch."""
    data, bs = ctx.data, ctx.cfg.train.batch_size
    views = views_for(ctx.cfg.data, augment)
    train = image_loader(ctx.images(data.train), bs, ViewSampler(len(data.train), ctx.seed, views), ctx.cfg.data, ctx.device)

    def loader_for(rows: np.ndarray) -> DataLoader:
        return image_loader(ctx.images(rows), ctx.eval_batch_size, None, ctx.cfg.data, ctx.device)

    forward, runtime = ctx.model, "torch"
    if frozen is not None and ctx.runtime != "torch":
        forward, part = frozen()
        runtime = part.name
        if runtime == "torch":  # refused: the whole model in PyTorch, as without a runtime
            forward, params = ctx.model, None
    return StageInputs("images", train, loader_for(data.val), forward, params if runtime != "torch" else None,
                       (ctx.prep(augment), ctx.prep(False)), loader_for, runtime, augment)


def _random_in_train_mode(module: torch.nn.Module) -> bool:
    """Dropout or drop-path inside: its train-mode output is not the fixed function a runtime runs."""
    for m in module.modules():
        p = m.p if isinstance(m, torch.nn.Dropout) else getattr(m, "drop_prob", None)
        if p:
            return True
    return False


def frozen_backbone_forward(ctx: UnitContext, rows: np.ndarray) -> Callable[[], tuple[Callable, FrozenForward]] | None:
    """Stage 1 on images: the frozen backbone in the frozen runtime, the head in PyTorch."""
    backbone, model = ctx.model.backbone, ctx.model
    if any(p.requires_grad for p in backbone.parameters()) or _random_in_train_mode(backbone):
        return None

    def build() -> tuple[Callable, FrozenForward]:
        part = ctx.frozen(backbone, rows, "the frozen backbone", output="features")
        return (lambda x: model.head_forward(part(x))), part

    return build


def frozen_lower_forward(ctx: UnitContext, rows: np.ndarray) -> Callable[[], tuple[Callable, FrozenForward]] | None:
    """Stage 2 (or a fine-tuned model) on images: the frozen lower blocks in the frozen runtime,
    the unfrozen top and the head in PyTorch (None: the backbone cannot be cut there)."""
    split = frozen_split(ctx.model.backbone)
    if split is None or split.n_frozen_blocks == 0:
        return None
    model = ctx.model

    def build() -> tuple[Callable, FrozenForward]:
        part = ctx.frozen(split.lower, rows, f"the frozen lower {split.n_frozen_blocks} blocks",
                          output="frozen_part", frozen_blocks=split.n_frozen_blocks)
        return (lambda x: model.head_forward(split.upper(part(x)))), part

    return build


def cached_outputs(ctx: UnitContext, kind: str, fn: torch.nn.Module, views: int, rows: np.ndarray,
                   dtype: str = "float32", **part: Any) -> tuple[np.ndarray, dict[int, int], str]:
    """A frozen part's cached output for ``rows`` (computed here, in the frozen runtime, for
    images not cached yet): (array of shape (stored, views, ...), row -> its position in the
    array, the runtime whose outputs these are). The key holds the runtime: a refused runtime's
    rows are computed and cached under PyTorch's key."""
    cfg, data = ctx.cfg, ctx.data
    hashes = [data.hashes[i] for i in rows]
    was_training = fn.training
    fn.eval().to(ctx.device)  # frozen: no statistic moves, no dropout, either way
    size = cfg.data.image_size or 224
    with torch.no_grad():
        probe = fn(ctx.prep(False)(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=ctx.device)))
    shape = (views, *probe.shape[1:])

    def key(runtime: str) -> str:
        return ctx.part_key(output=kind, views=views, dtype=dtype, **ctx.runtime_key(runtime), **part)

    runtime = ctx.runtime
    runner: FrozenForward | None = None
    if runtime != "torch" and ctx.features.missing(key(runtime), hashes, shape, dtype):
        runner = ctx.frozen(fn, rows, f"the frozen {'backbone' if kind == 'features' else 'lower blocks'}",
                            output=kind, **part)
        runtime = runner.name

    def compute(positions: list[int]):
        forward = runner if runner is not None else torch_forward(fn, ctx.autocast)
        loader = image_loader(ctx.images(rows[positions]), ctx.eval_batch_size, None, cfg.data, ctx.device)
        yield from frozen_pass(forward, loader, ctx.prep(False), ctx.device,
                               f"caching {kind} outputs ({forward.name})", views)

    values, stored = ctx.features.outputs(key(runtime), hashes, shape, dtype, compute)
    fn.train(was_training)  # Lightning keeps each module's mode: leave it as it was
    return values, {int(r): int(s) for r, s in zip(rows, stored)}, runtime


def cached_inputs(ctx: UnitContext, kind: str, fn: torch.nn.Module, views: int, forward: Callable,
                  params: list[torch.nn.Parameter], dtype: str = "float32", **part: Any) -> StageInputs:
    """Inputs from a frozen part's cached output (computed here for images not cached yet)."""
    data = ctx.data
    values, where, runtime = cached_outputs(ctx, kind, fn, views, data.all_rows, dtype, **part)
    if kind == "features":  # small: keep in memory for the many stage-1 epochs
        values = torch.from_numpy(np.array(values))
    bs = ctx.cfg.train.batch_size

    def dataset(part_rows: np.ndarray) -> RowTensors:
        return RowTensors(values, np.array([where[int(r)] for r in part_rows]), data.labels[part_rows])

    def loader_for(part_rows: np.ndarray) -> DataLoader:
        return tensor_loader(dataset(part_rows), ctx.eval_batch_size, None, ctx.device)

    train = tensor_loader(dataset(data.train), bs, ViewSampler(len(data.train), ctx.seed, views), ctx.device)
    return StageInputs(kind, train, loader_for(data.val), forward, params, (None, None), loader_for, runtime,
                       views > 1)


@torch.no_grad()
def tta_from_features(ctx: UnitContext, rows: np.ndarray) -> np.ndarray:
    """``evaluation.tta`` for a head on the frozen backbone: the head on the cached pooled
    features of the 8 dihedral views, probabilities averaged. The views' features are cached
    once per backbone (computed in the frozen runtime), so every fold reuses them (the test
    side is the same for all folds)."""
    model = ctx.model.eval()
    values, where, _ = cached_outputs(ctx, "features", model.backbone, DIHEDRAL_VIEWS, rows)
    x = torch.from_numpy(np.array(values[[where[int(r)] for r in rows]])).float().to(ctx.device)
    proba = torch.stack([model.probabilities(model.head_forward(x[:, v]).float()) for v in range(x.shape[1])])
    return proba.mean(dim=0).cpu().numpy().astype(np.float64)


def stage1_augmented(ctx: UnitContext) -> bool:
    return ctx.cfg.train.stage1_augmented and ctx.cfg.data.augment != "none"


def stage1_cached(ctx: UnitContext) -> bool:
    """Stage 1 trains on cached features only when the cache holds its inputs exactly: no
    augmentation (every epoch sees the same images) or the dihedral one (each of the 8 views
    cached), a cache, ``train.feature_cache`` on. Random augmentations (flips with colour
    jitter, crops, rotations) make every epoch's images new: the frozen backbone runs on them."""
    train = ctx.cfg.train
    exact = not stage1_augmented(ctx) or ctx.cfg.data.augment == "dihedral"
    return ctx.features is not None and train.feature_cache and exact


def stage1_inputs(ctx: UnitContext) -> StageInputs:
    """Stage 1: cached pooled features when nothing random happens before the head; else
    (``train.stage1.augment``) every augmented batch through the frozen backbone, in the
    frozen runtime, and the head."""
    augment = stage1_augmented(ctx)
    if stage1_cached(ctx):
        return cached_inputs(ctx, "features", ctx.model.backbone, views_for(ctx.cfg.data, augment),
                             ctx.model.head_forward, list(ctx.model.head.parameters()))
    return image_inputs(ctx, augment, frozen_backbone_forward(ctx, ctx.data.train), list(ctx.model.head.parameters()))


def stage2_inputs(ctx: UnitContext) -> StageInputs:
    """Stage 2: the frozen part's cached output when its inputs are deterministic (no
    augmentation, or one of the 8 dihedral views, each cached), else images."""
    cfg = ctx.cfg
    augment = cfg.data.augment != "none" and cfg.train.stage2_augmented
    split = frozen_split(ctx.model.backbone)
    deterministic = not augment or cfg.data.augment == "dihedral"
    if ctx.features is None or not cfg.train.stage2_cache or not deterministic or split is None or not cfg.data.image_size:
        if cfg.train.stage2_cache and ctx.features is not None and split is None:
            log.info("stage-2 cache: %s cannot be cut at its frozen part; training on images", cfg.model.backbone)
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        return image_inputs(ctx, augment, frozen_lower_forward(ctx, ctx.data.train), params)
    model = ctx.model
    params = [p for p in model.parameters() if p.requires_grad]
    return cached_inputs(ctx, "frozen_part", split.lower, views_for(cfg.data, augment),
                         lambda x: model.head_forward(split.upper(x)), params,
                         dtype=cfg.train.stage2_cache_dtype, frozen_blocks=split.n_frozen_blocks)


# -- fit ---------------------------------------------------------------------------------

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


def trainer_flags(cfg: Config, device: torch.device) -> dict[str, Any]:
    """Deterministic algorithms on CPU; cudnn.benchmark on GPU (unless asked otherwise)."""
    setting = cfg.train.deterministic
    deterministic = (device.type == "cpu") if setting == "auto" else bool(setting)
    return {
        "accelerator": "gpu" if device.type == "cuda" else "cpu",
        "precision": precision(cfg.train.precision, device),
        "deterministic": ("warn" if device.type == "cuda" else True) if deterministic else False,
        "benchmark": device.type == "cuda" and not deterministic,
    }


def stage_info(ctx: UnitContext, name: str, inputs: StageInputs) -> dict[str, Any]:
    trainable = inputs.params if inputs.params is not None else [p for p in ctx.model.parameters() if p.requires_grad]
    return {f"{name}_inputs": inputs.kind, f"{name}_trainable": sum(p.numel() for p in trainable),
            f"{name}_runtime": inputs.runtime, f"{name}_augmented": inputs.augmented}


def train_stage(ctx: UnitContext, name: str, stage: StageConfig, inputs: StageInputs, start_score: float | None,
                snapshot_epochs: set[int] | None = None, rank: int = 0, val_shard: tuple[np.ndarray, int] | None = None,
                **trainer_args: Any) -> tuple[ClassifierTask, BestWeights, EpochSnapshots]:
    """Lightning's fit of one stage on one device, or as DDP rank ``rank`` (``trainer_args``:
    devices and strategy; ``val_shard``: this rank's validation positions)."""
    cfg = ctx.cfg
    task = ClassifierTask(ctx.model, cfg.train, ctx.class_weights, stage.epochs, len(inputs.train), stage=name,
                          forward=inputs.forward, params=inputs.params, prep=inputs.prep,
                          val_batch_size=ctx.eval_batch_size, val_shard=val_shard)
    best = BestWeights(cfg.train.monitor, start_score=start_score)
    snapshots = EpochSnapshots(snapshot_epochs or set())
    callbacks: list[pl.Callback] = [best, snapshots]
    if stage.patience:
        callbacks.append(pl.callbacks.EarlyStopping(
            monitor=f"val_{cfg.train.monitor}", mode=monitor_mode(cfg.train.monitor), patience=stage.patience,
        ))
    if ctx.reporter is not None:
        reporter = ctx.reporter
        callbacks.append(EpochReporter(lambda e, n, m: reporter(name, e, n, m)))
    if ctx.on_gpu:
        ctx.model.to(memory_format=torch.channels_last)
    trainer = pl.Trainer(**{
        "max_epochs": stage.epochs, "devices": 1, "logger": _logger(cfg.train.logger, ctx.log_dir, name),
        "callbacks": callbacks, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
        **trainer_flags(cfg, ctx.device), **trainer_args,
    })
    # the same random state at every stage start, whatever feeds the network (DDP: one stream per rank)
    pl.seed_everything(ctx.seed + (0 if name == "stage1" else 1000) + 100_000 * rank, workers=True, verbose=False)
    trainer.fit(task, train_dataloaders=inputs.train, val_dataloaders=inputs.val)
    return task, best, snapshots


def _gather(inputs: StageInputs, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*inputs.loader_for(rows))
    return torch.cat(xs).float().cpu(), torch.cat(ys).long().cpu()


def fit_convex_stage(ctx: UnitContext, name: str, stage: StageConfig, inputs: StageInputs) -> StageResult:
    """``solver: lbfgs``: the linear head solved to its regularised optimum on the cached
    features, L2 strength chosen on the validation fold by ``train.monitor``; the result has
    the same shape as :func:`fit_stage`'s (one history row per strength tried)."""
    from allwen.evaluation.metrics import compute_metrics
    from allwen.training.convex import fit_linear_head, linear_layer

    if inputs.kind != "features":
        raise ValueError(
            f"train.{name}.solver=lbfgs needs cached features (train.feature_cache: true, train.stage1.augment: false, "
            "a run with a feature cache); use solver adam"
        )
    linear_layer(ctx.model)  # a clear error for hidden-layer heads before any work
    if ctx.cfg.train.devices > 1:
        log.info("%s: the lbfgs head solve runs on one device (train.devices=%d applies to stages on images or "
                 "the frozen part)", name, ctx.cfg.train.devices)
    monitor = ctx.cfg.train.monitor
    weights = None if ctx.class_weights is None else torch.as_tensor(ctx.class_weights, dtype=torch.float32)
    x, y = _gather(inputs, ctx.data.train)
    xv, yv = _gather(inputs, ctx.data.val)
    rows: dict[float, dict[str, Any]] = {}
    clock = [time.perf_counter()]

    def score(y_val: np.ndarray, proba: np.ndarray) -> float:  # called after each strength's solve
        logp = torch.log(torch.as_tensor(proba).clamp_min(1e-12)).float()
        loss = float(torch.nn.functional.nll_loss(logp, yv, weight=weights))  # the weighted loss stage 1 trains
        metrics = compute_metrics(y_val, proba)
        rows[len(rows)] = {"val_loss": loss, **{f"val_{k}": float(metrics[k]) for k in history_metrics()},
                           "seconds": round(time.perf_counter() - clock[0], 3)}  # solve + score
        clock[0] = time.perf_counter()
        value = -loss if monitor == "loss" else metrics[monitor]
        return float(value) if value == value else float("-inf")

    pl.seed_everything(ctx.seed, workers=True, verbose=False)
    started = time.perf_counter()
    fit = fit_linear_head(ctx.model, x, y, xv, yv, ctx.class_weights, score, tuple(stage.l2))
    history = []
    for epoch, (strength, row) in enumerate(zip(sorted(stage.l2, reverse=True), rows.values())):
        history.append({"stage": name, "epoch": epoch, "train_loss": float("nan"), **row, "lr": float("nan"),
                        "l2": strength, "iterations": fit.iterations[strength]})
        if ctx.reporter is not None:
            ctx.reporter(name, epoch, len(stage.l2), {k: v for k, v in row.items() if k.startswith("val_")})
    state = {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()}
    with torch.no_grad():
        val_proba = ctx.model.probabilities(inputs.forward(xv)).numpy().astype(np.float64)
    best = -fit.val_score if monitor == "loss" else fit.val_score
    log.info("%s: lbfgs head in %.1fs, L2 %g, validation %s %.4f", name, time.perf_counter() - started,
             fit.strength, monitor, best)
    trainable = sum(p.numel() for p in linear_layer(ctx.model).parameters())
    # the solved head is both the best and the last model: keep best | last agree
    return StageResult(name, history, best, state, val_proba, inputs,
                       {f"{name}_inputs": inputs.kind, f"{name}_l2": fit.strength, f"{name}_trainable": trainable,
                        f"{name}_runtime": inputs.runtime, f"{name}_augmented": inputs.augmented},
                       last_val_proba=val_proba, best_epoch=[row["l2"] for row in history].index(fit.strength))


def image_forward(ctx: UnitContext, result: StageResult) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as ``result`` left it, on normalised images, its frozen part in the frozen
    runtime (test-time augmentation feeds it the 8 views of every test image)."""
    if result.inputs.kind == "images":
        return result.inputs.forward
    build = (frozen_lower_forward if result.inputs.kind == "frozen_part" else frozen_backbone_forward)(ctx, ctx.data.test)
    if build is None or ctx.runtime == "torch":
        return ctx.model
    forward, part = build()
    return forward if part.name != "torch" else ctx.model


@torch.no_grad()
def predict_rows(ctx: UnitContext, result: StageResult, rows: np.ndarray) -> np.ndarray:
    """Class probabilities for ``rows`` with the model as it is, fed as ``result``'s stage was."""
    model = ctx.model.eval().to(ctx.device)
    if len(rows) == 0:
        return np.zeros((0, model.num_classes))
    prep = result.inputs.prep[1]
    out = []
    for x, _ in result.inputs.loader_for(rows):
        x = x.to(ctx.device, non_blocking=True)
        x = prep(x) if prep is not None else x
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.autocast):
            out.append(model.probabilities(result.inputs.forward(x).float()))
    return torch.cat(out).cpu().numpy().astype(np.float64)


