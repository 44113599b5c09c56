"""The grid loop: every scenario x every fold of the split, resumable unit by unit.

Units run one after another (``executor="sequential"``) or as Ray tasks (``"ray"``), each
writing its own folder with the same atomic writes and ``unit.json``-last marker, so a run
resumes the same way whichever executor (or how many machines) trained it. The driver
decodes the images once before any unit starts, so units only read the shared store.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from allwen.config import Config
from allwen.errors import StoppedAtBoundary
from allwen.data.splits import Split
from allwen.data.table import ImageTable
from allwen.training.inputs import DecodedImages
from allwen.training.progress import GridProgress
from allwen.runfolder import RunFolder, UnitFolder
from allwen.training.plan import UnitRef, budget as _budget, group_trainings, plan_units
from allwen.training.unit import RunCaches, train_epoch_grid, train_unit

log = logging.getLogger(__name__)
EXECUTORS = ("sequential", "ray")


def decode_once(units: list[UnitRef], table: ImageTable, split: Split, caches: RunCaches) -> None:
    """Fill the decoded-image store for every preprocessing the units use, before they start."""
    from allwen.models import backbone_data_config, create_backbone

    rows = np.unique(np.concatenate([split.test, *[np.concatenate(f) for f in split.folds]]))
    paths, hashes = [table.frame["path"][i] for i in rows], [table.frame["sha256"][i] for i in rows]
    seen: set[str] = set()
    norms: dict[str, dict[str, Any]] = {}
    for unit in units:
        # the decoding depends on the backbone's interpolation only: a random-init copy has it
        name = unit.cfg.model.backbone
        if not DecodedImages.usable(unit.cfg.data):
            continue
        if name not in norms:
            norms[name] = backbone_data_config(create_backbone(name, "none"))
        norm = norms[name]
        marker = json.dumps([unit.cfg.data.model_dump(mode="json"), norm.get("interpolation")], sort_keys=True)
        if marker not in seen:
            seen.add(marker)
            caches.decoded(unit.cfg, norm, paths, hashes)


def _group_budget(group: list[UnitRef]) -> int:
    return max(_budget(u.cfg) for u in group)


def train_group(group: list[UnitRef], table: ImageTable, split: Split, caches: RunCaches | None,
                reporter=None) -> list[dict[str, Any]]:
    """One training: a unit alone, or an epoch grid's units from one training."""
    if len(group) == 1:
        unit = group[0]
        return [train_unit(unit.cfg, table, split, unit.fold, unit.folder, caches, reporter)]
    return train_epoch_grid([(u.cfg, u.folder) for u in group], table, split, group[0].fold, caches, reporter)


def run_grid(cfg: Config, table: ImageTable, split: Split, run_dir: Path, quiet: bool = False,
             executor: str = "sequential", address: str | None = None, cpus_per_unit: int = 1,
             cache_dir: Path | None = None, stop_at: float | None = None,
             limit_s: float | None = None) -> list[dict[str, Any]]:
    """Train every unfinished unit; finished units (``unit.json`` present) are skipped.

    ``stop_at`` (a ``time.monotonic()`` deadline, ``--stop-after``): no training starts after
    it; :class:`~allwen.errors.StoppedAtBoundary` is raised at that unit boundary instead."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: choose from {', '.join(EXECUTORS)}")
    units = plan_units(cfg, split.n_folds, run_dir)
    folder = RunFolder(run_dir)
    caches = RunCaches(cache_dir or folder.cache_dir)
    for unit in units:
        folder.write_scenario_config(unit.scenario, unit.cfg)
    trainings = group_trainings(units)  # an epoch grid's units are one training (one budget)
    todo = [g for g in trainings if not all(u.done for u in g)]
    with GridProgress(len(units), sum(_group_budget(g) for g in trainings), quiet) as progress:
        for group in trainings:
            if group not in todo:
                progress.skip_unit(_group_budget(group), len(group))
                log.info("%s: finished earlier, skipped", ", ".join(u.name for u in group))
        if todo:
            decode_once([u for g in todo for u in g], table, split, caches)
        if executor == "ray":
            try:
                _run_on_ray(todo, table, split, caches, progress, address, cpus_per_unit, stop_at)
            except StoppedAtBoundary:
                _stop_if_due(time.monotonic() - 1, limit_s, units)
        else:
            for group in todo:
                _stop_if_due(stop_at, limit_s, units)
                longest = max(group, key=lambda u: _budget(u.cfg))
                progress.start_unit(units.index(longest), longest.scenario, longest.fold)
                summaries = train_group(group, table, split, caches, progress.epoch)
                progress.end_unit(_group_budget(group), max(sum(s["epochs_run"].values()) for s in summaries),
                                 len(group))
    fix = "delete the unit's folder and run the same command again to retrain the unit"
    return [{"name": u.name, **UnitFolder(u.folder).read_info(f"{u.folder}: {fix}").model_dump(mode="json")} for u in units]


def _stop_if_due(stop_at: float | None, limit_s: float | None, units: list[UnitRef]) -> None:
    """At a unit boundary: raise :class:`StoppedAtBoundary` once the deadline has passed."""
    if stop_at is None or time.monotonic() < stop_at:
        return
    finished = sum(UnitFolder(u.folder).done for u in units)
    raise StoppedAtBoundary(finished, len(units), limit_s or 0.0)


def _train_remote(group: list[UnitRef], table: ImageTable, split: Split, cache: str,
                  threads: int, stop_at_epoch: float | None = None) -> list[dict[str, Any]] | None:
    """One training in a Ray worker: the same function, the same files, the same resume rules;
    None (nothing trained) when it starts after ``stop_at_epoch`` (``time.time()``: --stop-after)."""
    if stop_at_epoch is not None and time.time() >= stop_at_epoch:
        return None
    import os

    from allwen.threads import ENV

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ[ENV] = str(threads)  # the task's share of the budget: its CPUs (the unit fixes and records it)
    return train_group(group, table, split, RunCaches(Path(cache)))


def _run_on_ray(todo: list[list[UnitRef]], table: ImageTable, split: Split, caches: RunCaches, progress: GridProgress,
                address: str | None, cpus_per_unit: int, stop_at: float | None = None) -> None:
    """Each unit a Ray task with ``train.devices`` GPUs (one by default, when the cluster has
    them) or ``cpus_per_unit`` CPUs (at least ``train.devices``)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError("--executor ray needs Ray: pip install 'allwen[ray]' (or pip install ray)") from None
    if not todo:
        return
    if not ray.is_initialized():
        # "local" starts a private instance; an address joins a cluster (ray start --head ...)
        from allwen.threads import budget

        # a private instance holds the thread budget's CPUs; its tasks divide them (cpus_per_unit each)
        ray.init(address=address or "local", log_to_driver=False, include_dashboard=False,
                 **({} if address else {"num_cpus": budget()}))
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    remote = ray.remote(_train_remote)
    table_ref, split_ref = ray.put(table), ray.put(split)

    def submit(group: list[UnitRef]):
        devices = max(u.cfg.train.devices for u in group)  # train.devices > 1: DDP inside the task
        cpus = cpus_per_unit if has_gpus else max(cpus_per_unit, devices)
        task = remote.options(num_cpus=cpus, num_gpus=devices if has_gpus else 0, max_retries=0)
        # the deadline as wall-clock time: workers may run on other machines
        deadline = None if stop_at is None else time.time() + (stop_at - time.monotonic())
        return task.remote(group, table_ref, split_ref, str(caches.folder), cpus, deadline)

    pending = {submit(g): g for g in todo}
    skipped = 0
    log.info("ray: %d trainings submitted (%s each)", len(pending),
             "train.devices GPUs" if has_gpus else f"{cpus_per_unit} CPU (or train.devices, if more)")
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        for ref in finished:
            group = pending.pop(ref)
            summaries = ray.get(ref)  # a failed unit raises here, with its worker's traceback
            names = ", ".join(u.name for u in group)
            if summaries is None:
                skipped += 1
                log.info("%s: not started (--stop-after)", names)
                continue
            progress.finished_elsewhere(names, _group_budget(group), len(pending), len(group))
            log.info("%s: finished on ray in %.0fs", names, max(s["seconds"] for s in summaries))
    if skipped:
        raise StoppedAtBoundary(-1, -1, 0.0)  # run_grid counts the finished units
