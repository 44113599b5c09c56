"""What a run trains, without training it: the units (scenario x fold) and the trainings
that make them (an epoch grid is one training for several units). Imports no torch, so
``allwen run --dry-run`` answers at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from allwen.config import Config, expand_scenarios
from allwen.runfolder import RunFolder, UnitFolder, unit_name


@dataclass
class UnitRef:
    scenario: str
    fold: int
    folder: Path
    cfg: Config

    @property
    def name(self) -> str:
        return unit_name(self.scenario, self.fold)

    @property
    def done(self) -> bool:
        return UnitFolder(self.folder).done


def plan_units(cfg: Config, n_folds: int, run_dir: Path) -> list[UnitRef]:
    """All units of the run in order: scenarios (grid order) x folds."""
    return [
        UnitRef(name, k, RunFolder(run_dir).unit_dir(name, k), scenario_cfg)
        for name, scenario_cfg in expand_scenarios(cfg)
        for k in range(n_folds)
    ]


def last_stage_name(cfg: Config) -> str:
    return "stage2" if cfg.train.stage2 is not None and cfg.train.stage2.epochs > 0 else "stage1"


def epoch_grid_key(unit: UnitRef) -> str | None:
    """Units with the same key are one training: same config but the last stage's epoch count,
    ``keep: last``, no early stopping in that stage and a schedule blind to the total
    (constant, exponential per step; cosine depends on the total). None: trains alone."""
    train = unit.cfg.train
    stage = last_stage_name(unit.cfg)
    if train.keep != "last" or train.schedule == "cosine" or getattr(train, stage).patience is not None:
        return None
    raw = unit.cfg.model_dump(mode="json")
    raw["train"][stage]["epochs"] = None
    return json.dumps([unit.fold, raw], sort_keys=True)


def group_trainings(units: list[UnitRef]) -> list[list[UnitRef]]:
    """The trainings that make ``units``, in the order of their first unit."""
    groups: dict[str, list[UnitRef]] = {}
    for i, unit in enumerate(units):
        key = epoch_grid_key(unit) or f"alone:{i}"
        groups.setdefault(key, []).append(unit)
    return list(groups.values())


def budget(cfg: Config) -> int:
    """Epochs one unit trains (both stages)."""
    stage2 = cfg.train.stage2.epochs if cfg.train.stage2 is not None else 0
    return cfg.train.stage1.epochs + stage2


def dry_run(cfg: Config) -> dict[str, object]:
    """``allwen run --dry-run --json``: the units a run writes, the trainings that make them and
    the sweep's step count (1 without a sweep). Earlier steps' winners are not known yet: the
    first value of each stands in (unit names do not depend on them)."""
    from allwen.config.sweep import stand_in_winners, step_config

    folds = cfg.split.folds
    names: list[str] = []
    trainings = 0
    final = cfg
    if cfg.sweep:
        stand_in = stand_in_winners(cfg)
        for k in range(1, len(cfg.sweep)):
            step = RunFolder(".").step(k).root
            units = plan_units(step_config(cfg, k, stand_in), folds, step)
            names += [f"{step.as_posix()}/{u.name}" for u in units]
            trainings += len(group_trainings(units))
        final = step_config(cfg, len(cfg.sweep), stand_in)
    units = plan_units(final, folds, Path("."))
    names += [u.name for u in units]
    trainings += len(group_trainings(units))
    return {"units": names, "trainings": trainings, "steps": max(1, len(cfg.sweep))}
