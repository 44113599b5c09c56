"""One training stage on several devices (``train.devices``): Lightning DDP started from a unit.

The unit's process stays what it is: it holds the run lock, owns the unit folder, filled the
caches and predicts afterwards. For a stage it writes the starting point into
``logs/<stage>-ddp/`` (``spec.json``: config, rows, seed, caches; ``start.safetensors``: the
model), starts N fresh Python processes ``python -m allwen.training.distributed FOLDER`` with
``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` set (so Lightning's launcher starts nothing itself),
relays rank 0's epoch lines to the progress display, and waits. Each rank rebuilds the model,
rows and the stage's inputs from the spec and the run caches, trains its shard
(:mod:`allwen.training.shards`), and rank 0 hands back the history, the last and best weights,
the validation probabilities and any epoch snapshots as safetensors + JSON (``result.json``
last); the unit then goes on as after a single-device stage.

Why not one of Lightning's launchers: ``ddp`` re-runs the whole command line in every rank (a
second ``allwen run`` on the same run lock and folder); ``ddp_fork`` refuses to start once
CUDA is initialised in the parent, which the caches computed on the GPU do; ``ddp_spawn``
pickles the module, the loaders (a memory-mapped cache is copied whole) and closures, and
returns the weights through a ``torch.save``/``torch.load`` checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from allwen.config.schema import Config, StageConfig
from allwen.io import atomic_write_json, read_json
from allwen.models import (
    build_classifier,
    freeze_backbone,
    load_state,
    load_tensors,
    save_tensors,
    unfreeze_top,
)
from allwen.training.feature_cache import FeatureCache, pretrained_tag
from allwen.training.inputs import DecodedImages
from allwen.training.shards import ShardSampler
from allwen.training.stages import (
    Reporter,
    StageInputs,
    StageResult,
    UnitContext,
    UnitData,
    stage1_inputs,
    stage2_inputs,
    stage_info,
    train_stage,
)

log = logging.getLogger(__name__)
SPEC, RESULT, PROGRESS = "spec.json", "result.json", "progress.jsonl"
PARENT_ENV = "ALLWEN_DDP_PARENT"


# -- the unit's side ---------------------------------------------------------------------

def fit_distributed(ctx: UnitContext, name: str, stage: StageConfig, inputs: StageInputs,
                    start_score: float | None, snapshot_epochs: set[int] | None = None) -> StageResult:
    """:func:`~allwen.training.fit.fit_stage` over ``train.devices`` DDP ranks; ``ctx.model``
    ends with the last epoch's weights, as after a single-device fit."""
    world = ctx.cfg.train.devices
    folder = ctx.log_dir / f"{name}-ddp"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_tensors(ctx.model.state_dict(), folder / "start.safetensors")
    atomic_write_json(folder / SPEC, stage_spec(ctx, name, inputs.kind, start_score, snapshot_epochs))
    log.info("%s: Lightning DDP over %d %s, %d images per device and step (logs: %s)", name, world,
             "GPUs (nccl)" if ctx.on_gpu else "CPU processes (gloo)", ctx.cfg.train.batch_size // world, folder)
    started = time.perf_counter()
    run_ranks(folder, world, ctx.reporter)
    result = read_result(ctx, name, inputs, folder)
    log.info("%s: %d epochs on %d devices in %.1fs", name, len(result.history), world, time.perf_counter() - started)
    return result


def stage_spec(ctx: UnitContext, name: str, kind: str, start_score: float | None,
               snapshot_epochs: set[int] | None) -> dict[str, Any]:
    """Everything a rank needs to rebuild the stage (JSON: no pickle crosses processes)."""
    data = ctx.data
    return {
        "stage": name, "inputs": kind, "start_score": start_score, "snapshot_epochs": sorted(snapshot_epochs or ()),
        "config": ctx.cfg.model_dump(mode="json"), "seed": ctx.seed, "norm": ctx.norm,
        "class_weights": None if ctx.class_weights is None else [float(w) for w in ctx.class_weights],
        "data": {"paths": data.paths, "hashes": data.hashes, "labels": data.labels.tolist(), "train": data.train.tolist(),
                 "val": data.val.tolist(), "test": data.test.tolist(), "classes": data.classes},
        "log_dir": str(ctx.log_dir), "gpu": ctx.on_gpu,
        "features": None if ctx.features is None else str(ctx.features.folder),
        "decoded": None if ctx.decoded is None else str(ctx.decoded.store.folder),
        "trainable": [n for n, p in ctx.model.named_parameters() if p.requires_grad],
        "pretrained_tag": pretrained_tag(ctx.model.backbone),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(world: int) -> dict[str, str]:
    """The ranks' environment: one machine, this allwen first on the path, threads shared out."""
    import allwen

    source = str(Path(allwen.__file__).resolve().parents[1])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world),
           "NODE_RANK": "0", PARENT_ENV: str(os.getpid()),
           "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    from allwen.threads import ENV, budget, share

    each = str(share(budget(), world))  # the ranks divide the thread budget
    env.setdefault("OMP_NUM_THREADS", each)
    env[ENV] = each
    return env


def run_ranks(folder: Path, world: int, reporter: Reporter | None, poll_s: float = 0.2) -> None:
    """Start ``world`` ranks on ``folder``'s spec; relay epoch lines; any rank failing stops all."""
    env = rank_env(world)
    logs = [open(folder / f"rank{rank}.log", "wb") for rank in range(world)]
    procs: list[subprocess.Popen] = []
    try:
        for rank, out in enumerate(logs):
            procs.append(subprocess.Popen([sys.executable, "-m", "allwen.training.distributed", str(folder)],
                                          env={**env, "LOCAL_RANK": str(rank)}, stdout=out, stderr=subprocess.STDOUT))
        relay = _Relay(folder / PROGRESS, reporter)
        while True:
            relay.poll()
            codes = [p.poll() for p in procs]
            failed = [r for r, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                raise RuntimeError(rank_failure(folder, failed[0], codes[failed[0]]))
            if all(code == 0 for code in codes):
                break
            time.sleep(poll_s)
        relay.poll()
    finally:
        _stop(procs)
        for out in logs:
            out.close()


def rank_failure(folder: Path, rank: int, code: int) -> str:
    path = folder / f"rank{rank}.log"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    last = lines[-1].strip() if lines else "no output"
    return f"DDP rank {rank} of {folder.name} exited with code {code}: {last} (whole log: {path})"


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Relay:
    """Rank 0's epoch lines (``progress.jsonl``) to the unit's reporter, each once."""

    def __init__(self, path: Path, reporter: Reporter | None) -> None:
        self.path, self.reporter, self.done = path, reporter, 0

    def poll(self) -> None:
        if self.reporter is None or not self.path.exists():
            return
        lines = self.path.read_text().split("\n")[:-1]  # complete lines only
        for line in lines[self.done:]:
            row = json.loads(line)
            self.reporter(row["stage"], row["epoch"], row["max_epochs"], row["metrics"])
        self.done = len(lines)


def read_result(ctx: UnitContext, name: str, inputs: StageInputs, folder: Path) -> StageResult:
    """Rank 0's results as the unit's :class:`StageResult`; the large tensor files are removed
    afterwards (the unit's ``weights.safetensors`` is the one kept)."""
    fix = "the stage did not finish on its ranks; run the same command again to retrain the unit"
    result = read_json(folder / RESULT, fix)
    load_state(ctx.model, load_tensors(folder / "final.safetensors"), f"{name}'s last weights from DDP rank 0")
    probas = {k: v.numpy().astype(np.float64) for k, v in load_tensors(folder / "proba.safetensors").items()}
    best_state = load_tensors(folder / "best.safetensors") if result["best"] else None
    snapshots = {int(n): (load_tensors(folder / f"snapshot-{n}.safetensors"), probas.get(f"snapshot-{n}"))
                 for n in result["snapshots"]}
    for path in folder.glob("*.safetensors"):
        path.unlink()
    info = {**stage_info(ctx, name, inputs), f"{name}_devices": ctx.cfg.train.devices}
    return StageResult(name, result["history"], result["best_score"], best_state, probas.get("best"), inputs, info,
                       probas.get("last"), snapshots, result["best_epoch"])


# -- a rank's side -----------------------------------------------------------------------

def rank_context(spec: dict[str, Any], folder: Path, rank: int) -> UnitContext:
    """The unit's context rebuilt in a rank: the same model (structure from the config, weights
    from ``start.safetensors``), rows, seed and caches; the device is this rank's."""
    cfg = Config.model_validate(spec["config"])
    rows = spec["data"]
    data = UnitData(rows["paths"], rows["hashes"], np.asarray(rows["labels"], dtype=np.int64),
                    *(np.asarray(rows[k], dtype=np.int64) for k in ("train", "val", "test")), rows["classes"])
    model = build_classifier(cfg.resolved_model().model_copy(update={"weights": "none"}), len(data.classes))  # weights: below
    freeze_backbone(model)
    if spec["stage"] == "stage2":
        unfreeze_top(model, cfg.train.unfreeze_blocks or float(cfg.train.unfreeze))
    load_state(model, load_tensors(folder / "start.safetensors"), "the stage's starting weights")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if trainable != spec["trainable"] or pretrained_tag(model.backbone) != spec["pretrained_tag"]:
        raise RuntimeError(f"rank {rank} rebuilt another model than the unit's (trainable parameters or weights tag differ)")
    device = torch.device("cuda", rank) if spec["gpu"] else torch.device("cpu")
    weights = None if spec["class_weights"] is None else np.asarray(spec["class_weights"])
    return UnitContext(
        cfg, data, model, spec["norm"], device, weights, spec["seed"], Path(spec["log_dir"]),
        reporter=_progress_writer(folder / PROGRESS) if rank == 0 else None,
        features=FeatureCache(Path(spec["features"])) if spec["features"] else None,
        decoded=DecodedImages(Path(spec["decoded"]), cfg.data, spec["norm"]) if spec["decoded"] else None,
    )


def _progress_writer(path: Path) -> Reporter:
    def report(stage: str, epoch: int, max_epochs: int, metrics: dict[str, Any]) -> None:
        with open(path, "a") as out:
            out.write(json.dumps({"stage": stage, "epoch": epoch, "max_epochs": max_epochs, "metrics": metrics}) + "\n")
    return report


def shard_inputs(ctx: UnitContext, inputs: StageInputs, rank: int, world: int) -> tuple[StageInputs, tuple[np.ndarray, int]]:
    """The stage's loaders cut to this rank's shard: training batches of batch_size / world,
    validation positions r, r+world, ...; the unit's loader workers are shared out."""
    train, val = inputs.train, inputs.val

    def loader(source: DataLoader, batch_size: int, sampler: ShardSampler) -> DataLoader:
        workers = source.num_workers // world
        return DataLoader(source.dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=source.pin_memory,
                          worker_init_fn=source.worker_init_fn if workers else None)

    n_val = len(val.dataset)
    val_sampler = ShardSampler(range(n_val), n_val, rank, world)
    sharded = replace(inputs, train=loader(train, ctx.cfg.train.batch_size // world,
                                           ShardSampler(train.sampler, len(train.dataset), rank, world)),
                      val=loader(val, ctx.eval_batch_size, val_sampler))
    return sharded, (val_sampler.positions, n_val)


def write_result(folder: Path, model: torch.nn.Module, task: Any, best: Any, snapshots: Any) -> None:
    """Rank 0: the stage's results as safetensors + JSON, ``result.json`` last."""
    save_tensors(model.state_dict(), folder / "final.safetensors")
    if best.best_state is not None:
        save_tensors(best.best_state, folder / "best.safetensors")
    probas = {"best": best.best_val_proba, "last": task.last_val_proba}
    for n, (state, proba) in snapshots.taken.items():
        save_tensors(state, folder / f"snapshot-{n}.safetensors")
        probas[f"snapshot-{n}"] = proba
    save_tensors({k: torch.from_numpy(v) for k, v in probas.items() if v is not None}, folder / "proba.safetensors")
    atomic_write_json(folder / RESULT, {"history": task.history, "best_score": best.best_score,
                                        "best_epoch": best.best_epoch, "best": best.best_state is not None,
                                        "snapshots": sorted(snapshots.taken)})


def _exit_with_parent(parent: int) -> None:
    """A rank whose unit process is gone (``kill -9``) stops instead of training for nobody."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def main(folder: str) -> None:
    """One rank (``LOCAL_RANK`` of ``WORLD_SIZE``) of the stage described in ``folder``."""
    from lightning.pytorch.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    from allwen.training.logs import quiet_lightning

    quiet_lightning()

    path = Path(folder)
    rank, world = int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    _exit_with_parent(int(os.environ[PARENT_ENV]))
    # every rank logs the same numbers, computed from all ranks' gathered rows: nothing to sync
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")  # inside Lightning's all_gather
    spec = read_json(path / SPEC, "written by the unit before its ranks start")
    ctx = rank_context(spec, path, rank)
    name = spec["stage"]
    inputs = (stage1_inputs if name == "stage1" else stage2_inputs)(ctx)
    if inputs.kind != spec["inputs"]:
        raise RuntimeError(f"rank {rank} built {inputs.kind} inputs where the unit built {spec['inputs']}")
    sharded, val_shard = shard_inputs(ctx, inputs, rank, world)
    strategy = DDPStrategy(cluster_environment=LightningEnvironment(),
                           process_group_backend="nccl" if spec["gpu"] else "gloo")
    task, best, snapshots = train_stage(
        ctx, name, getattr(ctx.cfg.train, name), sharded, spec["start_score"], set(spec["snapshot_epochs"]),
        rank=rank, val_shard=val_shard, devices=world, num_nodes=1, strategy=strategy, use_distributed_sampler=False,
    )
    if rank == 0:
        write_result(path, ctx.model, task, best, snapshots)


if __name__ == "__main__":
    main(sys.argv[1])
