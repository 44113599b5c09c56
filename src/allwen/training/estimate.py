"""``allwen run CONFIG --dry-run --estimate``: how long and how much memory, before a run.

Builds the configured backbone and head on the device the run would use (random weights: the
time does not depend on their values, and no hub is needed), then times a few real steps of
each stage as configured: stage 1 with the frozen backbone on every (augmented) batch, or its
one pass that fills the feature cache and a head on features; stage 2 with the top blocks
unfrozen, augmentation, and the precision the trainer would use. Per stage it prints seconds per
epoch (training steps plus the validation pass) and the total hours for all units at the
configured epochs (early stopping can only make it shorter: an upper bound), the peak memory
(GPU ``max_memory_allocated``, CPU resident set size) and whether the configured batch fits.

On a CPU a step of the whole batch of a large network takes minutes, so the steps are timed on
``probe`` images and scaled to the batch (time per image is close to flat in the batch size on
a CPU; the memory is scaled likewise and said to be an extrapolation).
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

import torch

from allwen.config import Config, expand_scenarios
from allwen.config.schema import DataConfig
from allwen.models import backbone_data_config, build_classifier, freeze_backbone, unfreeze_top
from allwen.training.inputs import BatchPrep
from allwen.training.stages import precision
from allwen.training.task import build_optimizer
from allwen.training.unit import select_device

CNMC_IMAGES, CNMC_SIZE = 12_528, 450  # C-NMC 2019: training folds + labelled preliminary test set
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def count_images(cfg: Config) -> tuple[int, str]:
    """Images of the configured data (a quick count of image files), or C-NMC's when absent."""
    path = Path(cfg.data.path) if cfg.data.path else None
    if path is not None and path.is_dir():
        n = sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if n:
            return n, f"{n} image files under {path}"
    return CNMC_IMAGES, f"{path or 'data.path unset'}: not found here, C-NMC's {CNMC_IMAGES} images assumed"


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _available_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, repeats: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    return (time.perf_counter() - started) / repeats


def estimate(cfg: Config, n_images: int | None = None, batches: int = 2, probe: int | None = None) -> dict[str, Any]:
    """Time a few real steps of each stage of ``cfg`` and project them to the whole run."""
    device = select_device(cfg.train.accelerator, 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    where = "given"
    if n_images is None:
        n_images, where = count_images(cfg)
    size = cfg.data.image_size or CNMC_SIZE
    bs, eval_bs = cfg.train.batch_size, cfg.train.eval_batch_size or cfg.train.batch_size
    probe = probe or (bs if device.type == "cuda" else min(bs, 2))
    folds = cfg.split.folds
    # "official": C-NMC's labelled preliminary test set, 1,867 of its 12,528 images
    test = cfg.split.test if isinstance(cfg.split.test, float) else 1867 / CNMC_IMAGES
    pool = n_images * (1 - test)
    n_train, n_val = pool * (folds - 1) / folds, pool / folds
    units = len(expand_scenarios(cfg)) * folds

    model_cfg = cfg.model.model_copy(update={"weights": "none"})
    model = build_classifier(model_cfg, 2).to(device)
    norm = backbone_data_config(model.backbone)
    freeze_backbone(model)
    autocast = precision(cfg.train.precision, device).startswith("bf16")
    held: dict[str, torch.Tensor] = {}

    def use(p: int) -> None:
        held["x"] = torch.randint(0, 256, (p, 3, size, size), dtype=torch.uint8, device=device)
        held["y"] = torch.randint(0, 2, (p,), device=device)

    def train_step(optimizer, prep):
        def run():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model.loss(model(prep(held["x"])).float(), held["y"])
            loss.backward()
            optimizer.step()
        return run

    eval_prep = BatchPrep(DataConfig(), norm, False)

    @torch.no_grad()
    def eval_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            model(eval_prep(held["x"]))

    def per_image(step) -> float:
        """Seconds per image; on a CPU the probe grows (x4) while a step is short, so a small
        network's fixed cost per step is not taken for cost per image."""
        p = probe
        while True:
            use(p)
            seconds = _timed(step, batches, device)
            if p >= bs or seconds >= 0.5:
                return seconds / p
            p = min(bs, p * 4)

    base = _rss_mb() if device.type == "cpu" else 0.0  # the model built, before any step
    stages: list[dict[str, Any]] = []
    model.train()
    s1 = cfg.train.stage1
    if s1.epochs:
        params = [p for p in model.parameters() if p.requires_grad]
        step_s = per_image(train_step(build_optimizer(params, cfg.train), BatchPrep(cfg.data, norm, bool(s1.augment))))
        eval_s = per_image(eval_step)
        cached = not s1.augment and cfg.train.feature_cache
        once = eval_s * n_images if cached else 0.0  # one frozen pass over every image fills the feature cache
        epoch = 0.0 if cached else step_s * n_train + eval_s * n_val
        stages.append({"stage": "stage1", "epochs": s1.epochs, "seconds_per_epoch": round(epoch, 2),
                       "seconds_once": round(once, 2), "step_seconds_at_batch": round(step_s * bs, 3),
                       "augmented": bool(s1.augment), "feature_cache": cached})
    s2 = cfg.train.stage2
    if s2 is not None and s2.epochs:
        unfreeze_top(model, cfg.train.unfreeze_blocks or float(cfg.train.unfreeze))
        params = [p for p in model.parameters() if p.requires_grad]
        prep = BatchPrep(cfg.data, norm, s2.augment is not False)
        step_s = per_image(train_step(build_optimizer(params, cfg.train), prep))
        eval_s = per_image(eval_step)
        epoch = step_s * n_train + eval_s * n_val
        stages.append({"stage": "stage2", "epochs": s2.epochs, "seconds_per_epoch": round(epoch, 2),
                       "seconds_once": 0.0, "step_seconds_at_batch": round(step_s * bs, 3),
                       "augmented": s2.augment is not False, "unfreeze": cfg.train.unfreeze_blocks or cfg.train.unfreeze})
    probe = len(held["y"]) if held else probe
    scale = bs / probe
    per_unit = sum(s["seconds_per_epoch"] * s["epochs"] + s["seconds_once"] for s in stages)
    peak = _peak_mb(device)
    # on a CPU the probe's activations (the growth over the built model) scale with the batch
    peak_at_batch = base + (peak - base) * scale if device.type == "cpu" else peak
    available = _available_mb(device)
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "backbone": cfg.model.backbone, "image_size": size, "batch_size": bs, "probe_batch": probe,
        "images": n_images, "images_from": where, "units": units, "train_images_per_unit": round(n_train),
        "val_images_per_unit": round(n_val), "precision": "bf16" if autocast else "f32",
        "threads": torch.get_num_threads(), "stages": stages,
        "hours_per_unit": round(per_unit / 3600, 3), "hours_total_upper_bound": round(units * per_unit / 3600, 2),
        "peak_memory_mb": round(peak, 1), "peak_memory_at_batch_mb": round(peak_at_batch, 1),
        "memory_kind": "max_memory_allocated" if device.type == "cuda" else "resident set size",
        "available_mb": round(available, 1), "batch_fits": bool(peak_at_batch < available),
    }


def format_estimate(found: dict[str, Any]) -> str:
    """The estimate in words, one fact a line."""
    lines = [f"estimate on {found['device']} ({found['threads']} threads): {found['backbone']} at "
             f"{found['image_size']} px, batch {found['batch_size']} (timed on batches of {found['probe_batch']}, "
             f"{found['precision']}); {found['images']} images ({found['images_from']}); "
             f"{found['train_images_per_unit']} training / {found['val_images_per_unit']} validation images per unit"]
    for s in found["stages"]:
        once = f", plus {s['seconds_once']:.0f} s once (feature cache)" if s["seconds_once"] else ""
        lines.append(f"{s['stage']}: {s['seconds_per_epoch']:.0f} s per epoch x {s['epochs']} epochs{once}")
    lines.append(f"{found['units']} units: at most {found['hours_total_upper_bound']:.2f} h "
                 f"({found['hours_per_unit']:.2f} h per unit; early stopping can only shorten it)")
    fits = "fits" if found["batch_fits"] else "does NOT fit (the OOM fallback halves the micro-batch on a GPU)"
    lines.append(f"peak memory: {found['peak_memory_mb']:.0f} MB measured ({found['memory_kind']}), about "
                 f"{found['peak_memory_at_batch_mb']:.0f} MB at batch {found['batch_size']}; "
                 f"{found['available_mb']:.0f} MB available: the batch {fits}")
    return "\n".join(lines)
