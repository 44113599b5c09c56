"""The grid loop: every scenario x every fold of the split, resumable unit by unit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allwen.config import Config, expand_scenarios, save_config
from allwen.data.splits import Split
from allwen.data.table import ImageTable
from allwen.io import read_json
from allwen.training.feature_cache import FeatureCache
from allwen.training.progress import GridProgress
from allwen.training.unit import UNIT_DONE, train_unit

log = logging.getLogger(__name__)


@dataclass
class UnitRef:
    scenario: str
    fold: int
    folder: Path
    cfg: Config

    @property
    def name(self) -> str:
        return f"{self.scenario}/fold_{self.fold}"


def plan_units(cfg: Config, n_folds: int, run_dir: Path) -> list[UnitRef]:
    """All units of the run in order: scenarios (grid order) x folds."""
    return [
        UnitRef(name, k, run_dir / "units" / name / f"fold_{k}", scenario_cfg)
        for name, scenario_cfg in expand_scenarios(cfg)
        for k in range(n_folds)
    ]


def _budget(cfg: Config) -> int:
    stage2 = cfg.train.stage2.epochs if cfg.train.stage2 is not None else 0
    return cfg.train.stage1.epochs + stage2


def run_grid(cfg: Config, table: ImageTable, split: Split, run_dir: Path, quiet: bool = False) -> list[dict[str, Any]]:
    """Train every unfinished unit; finished units (``unit.json`` present) are skipped."""
    units = plan_units(cfg, split.n_folds, run_dir)
    cache = FeatureCache(run_dir / "cache" / "features")
    summaries = []
    with GridProgress(len(units), sum(_budget(u.cfg) for u in units), quiet) as progress:
        for i, unit in enumerate(units):
            save_config(unit.cfg, unit.folder.parent)
            if (unit.folder / UNIT_DONE).exists():
                progress.skip_unit(_budget(unit.cfg))
                log.info("%s: finished earlier, skipped", unit.name)
                done = read_json(unit.folder / UNIT_DONE, f"delete {unit.folder} and run the same command again to retrain the unit")
                summaries.append({"name": unit.name, **done})
                continue
            progress.start_unit(i, unit.scenario, unit.fold)
            summary = train_unit(unit.cfg, table, split, unit.fold, unit.folder, cache, progress.epoch)
            progress.end_unit(_budget(unit.cfg), sum(summary["epochs_run"].values()))
            summaries.append({"name": unit.name, **summary})
    if cache.images_computed:
        log.info("feature cache: %d images through the backbone in %.1fs", cache.images_computed, cache.seconds_computing)
    return summaries
