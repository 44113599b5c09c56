"""Stepwise sweeps (``sweep:``): each step a grid run with the earlier steps' winners fixed.

Every step but the last trains its grid as a sub-run in ``RUN/sweep/step_<k>/units/`` (the
run's split and caches); its winner, the value with the best mean validation metric over
folds (``sweep_metric``; ties go to the earlier value), is written to ``RUN/sweep.json`` as
soon as the step finishes, so a run resumes step by step. The last step's grid, with every
earlier winner fixed, is the run's own ``scenarios``: trained in ``RUN/units``, evaluated
and reported like any grid. Nothing here imports torch until a step trains.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from allwen.config import Config, expand_scenarios
from allwen.config.load import build_config, config_value, set_dotted
from allwen.failpoints import failpoint
from allwen.io import atomic_write_json, read_json

log = logging.getLogger(__name__)
SWEEP_JSON = "sweep.json"


def step_dir(run_dir: Path, k: int) -> Path:
    return Path(run_dir) / "sweep" / f"step_{k}"


def step_config(cfg: Config, k: int, winners: list[dict[str, Any]]) -> Config:
    """Step ``k`` (1-based) as a plain grid config: earlier winners fixed, its keys the scenarios."""
    raw = cfg.model_dump(mode="json")
    raw["sweep"] = []
    for settings in winners[: k - 1]:
        for key, value in settings.items():
            set_dotted(raw, key, value)
    raw["scenarios"] = copy.deepcopy(cfg.sweep[k - 1])
    return build_config(raw)


def read_sweep(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SWEEP_JSON
    if not path.exists():
        return {"metric": None, "steps": []}
    return read_json(path, "delete it and the sweep/ folder, and run the same command again to redo the sweep")


def final_config(cfg: Config, run_dir: Path) -> Config:
    """The run's own grid: the last step with the earlier winners (from ``sweep.json``) fixed."""
    if not cfg.sweep:
        return cfg
    steps = read_sweep(run_dir)["steps"]
    needed = len(cfg.sweep) - 1
    if len(steps) < needed:
        raise ValueError(f"{Path(run_dir) / SWEEP_JSON}: {len(steps)} of the sweep's first {needed} steps are finished; "
                         f"run `allwen run CONFIG --out {run_dir}` with the run's config to finish them")
    return step_config(cfg, len(cfg.sweep), [s["winner"] for s in steps])


def step_result(cfg: Config, step_cfg: Config, k: int, units_dir: Path, metric: str) -> dict[str, Any]:
    """Each value's mean and sd of the validation ``metric`` over folds, its units, the winner."""
    from allwen.ensemble.build import load_unit_predictions
    from allwen.evaluation.metrics import compute_metrics

    keys = list(step_cfg.scenarios)
    values = []
    for name, scenario_cfg in expand_scenarios(step_cfg):
        folders = sorted(p for p in (units_dir / name).glob("fold_*") if p.is_dir())
        scores, train = [], []
        for folder in folders:
            unit = load_unit_predictions(folder, name, int(folder.name.split("_")[1]))
            scores.append(float(compute_metrics(unit.val_y, unit.val_proba)[metric]))
            kept = read_json(folder / "unit.json", "run the same command again to redo this unit").get("train_metrics") or {}
            train.append(kept.get("accuracy"))
        settings = {key: config_value(scenario_cfg, key) for key in keys}
        train = [t for t in train if t is not None]
        values.append({"scenario": name, "settings": settings, "mean": float(np.mean(scores)),
                       "sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                       "train_accuracy": float(np.mean(train)) if train else None,
                       "values": scores, "units": [f"{name}/{p.name}" for p in folders]})
    best = max(range(len(values)), key=lambda i: (values[i]["mean"], -i))  # ties: the earlier value
    return {"step": k, "keys": keys, "metric": metric, "values": values,
            "winner": values[best]["settings"], "winner_scenario": values[best]["scenario"]}


def record_step(run_dir: Path, cfg: Config, result: dict[str, Any]) -> None:
    """Add (or replace) step ``result`` in ``sweep.json``, atomically."""
    state = read_sweep(run_dir)
    steps = [s for s in state["steps"] if s["step"] != result["step"]] + [result]
    atomic_write_json(Path(run_dir) / SWEEP_JSON, {"metric": cfg.sweep_metric, "n_steps": len(cfg.sweep),
                                                  "steps": sorted(steps, key=lambda s: s["step"])})


def run_sweep_steps(cfg: Config, table, split, run_dir: Path, **grid: Any) -> Config:
    """Train and decide every step but the last (skipping those ``sweep.json`` holds); return
    the run's own grid config."""
    from allwen.training.runner import run_grid

    for k in range(1, len(cfg.sweep)):
        steps = read_sweep(run_dir)["steps"]
        if any(s["step"] == k for s in steps):
            log.info("sweep step %d: decided earlier (%s), skipped", k, steps[k - 1]["winner"])
            continue
        scfg = step_config(cfg, k, [s["winner"] for s in steps])
        log.info("sweep step %d of %d: %s", k, len(cfg.sweep), ", ".join(scfg.scenarios))
        run_grid(scfg, table, split, step_dir(run_dir, k), cache_dir=Path(run_dir) / "cache", **grid)
        result = step_result(cfg, scfg, k, step_dir(run_dir, k) / "units", cfg.sweep_metric)
        record_step(run_dir, cfg, result)
        log.info("sweep step %d winner: %s", k, result["winner"])
        failpoint("sweep_step_written")
    return final_config(cfg, run_dir)


def record_last_step(cfg: Config, run_dir: Path) -> None:
    """The last step's values and winner, from the run's own units, beside the others."""
    if cfg.sweep:
        k = len(cfg.sweep)
        record_step(run_dir, cfg, step_result(cfg, final_config(cfg, run_dir), k, Path(run_dir) / "units",
                                              cfg.sweep_metric))
