"""Stepwise sweeps (``sweep:``): each step a grid run with the earlier steps' winners fixed.

Every step but the last trains its grid as a sub-run (:meth:`RunFolder.step`: its own units,
the run's split and caches); its winner (:func:`allwen.evaluation.selection.grid_winner`: the
value with the best mean validation ``sweep_metric`` over folds, ties to the earlier value)
is written to ``sweep.json`` as soon as the step finishes, so a run resumes step by step.
The last step's grid, with every earlier winner fixed, is the run's own ``scenarios``:
trained in the run's ``units/``, evaluated and reported like any grid. Nothing here imports
torch until a step trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from allwen.config import Config, expand_scenarios
from allwen.config.load import config_value
from allwen.config.sweep import step_config
from allwen.evaluation import selection
from allwen.evaluation.metrics import compute_metrics
from allwen.failpoints import failpoint
from allwen.runfolder import RunFolder, SweepRecord, SweepStep, SweepValue, unit_name

log = logging.getLogger(__name__)


def final_config(cfg: Config, run_dir: Path) -> Config:
    """The run's own grid: the last step with the earlier winners (from ``sweep.json``) fixed."""
    if not cfg.sweep:
        return cfg
    folder = RunFolder(run_dir)
    steps = folder.read_sweep().steps
    needed = len(cfg.sweep) - 1
    if len(steps) < needed:
        raise ValueError(f"{folder.sweep_json}: {len(steps)} of the sweep's first {needed} steps are finished; "
                         f"run `allwen run CONFIG --out {run_dir}` with the run's config to finish them")
    return step_config(cfg, len(cfg.sweep), [s.winner for s in steps])


def step_result(step_cfg: Config, k: int, folder: RunFolder, metric: str) -> SweepStep:
    """Each value's mean and sd of the validation ``metric`` over folds, its units, the winner."""
    keys = list(step_cfg.scenarios)
    values = []
    for name, scenario_cfg in expand_scenarios(step_cfg):
        folds = dict(folder.unit_folders()).get(name, [])
        scores, train = [], []
        for k_fold, _ in folds:
            unit = folder.unit_predictions(name, k_fold, verify=False)
            scores.append(float(compute_metrics(unit.val_y, unit.val_proba)[metric]))
            kept = folder.unit_info(name, k_fold).train_metrics
            train.append(kept.accuracy if kept else None)
        train = [t for t in train if t is not None]
        values.append(SweepValue(
            scenario=name, settings={key: config_value(scenario_cfg, key) for key in keys},
            mean=float(np.mean(scores)), sd=float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            train_accuracy=float(np.mean(train)) if train else None, values=scores,
            units=[unit_name(name, k_fold) for k_fold, _ in folds]))
    best = values[selection.grid_winner([v.mean for v in values])]
    return SweepStep(step=k, keys=keys, metric=metric, values=values, winner=best.settings,
                     winner_scenario=best.scenario)


def record_step(folder: RunFolder, cfg: Config, result: SweepStep) -> None:
    """Add (or replace) step ``result`` in ``sweep.json``, atomically."""
    record = folder.read_sweep().with_step(result)
    folder.write_sweep(record.model_copy(update={"metric": cfg.sweep_metric, "n_steps": len(cfg.sweep)}))


def run_sweep_steps(cfg: Config, table, split, run_dir: Path, **grid: Any) -> Config:
    """Train and decide every step but the last (skipping those ``sweep.json`` holds); return
    the run's own grid config."""
    from allwen.training.runner import run_grid

    folder = RunFolder(run_dir)
    for k in range(1, len(cfg.sweep)):
        record: SweepRecord = folder.read_sweep()
        decided = record.decided(k)
        if decided is not None:
            log.info("sweep step %d: decided earlier (%s), skipped", k, decided.winner)
            continue
        scfg = step_config(cfg, k, [s.winner for s in record.steps])
        log.info("sweep step %d of %d: %s", k, len(cfg.sweep), ", ".join(scfg.scenarios))
        step = folder.step(k)
        run_grid(scfg, table, split, step.root, cache_dir=folder.cache_dir, **grid)
        result = step_result(scfg, k, step, cfg.sweep_metric)
        record_step(folder, cfg, result)
        log.info("sweep step %d winner: %s", k, result.winner)
        failpoint("sweep_step_written")
    return final_config(cfg, run_dir)


def record_last_step(cfg: Config, run_dir: Path) -> None:
    """The last step's values and winner, from the run's own units, beside the others."""
    if cfg.sweep:
        folder = RunFolder(run_dir)
        k = len(cfg.sweep)
        record_step(folder, cfg, step_result(final_config(cfg, run_dir), k, folder, cfg.sweep_metric))
