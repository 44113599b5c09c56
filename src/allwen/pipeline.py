"""``allwen run``: split -> train every unit -> ensembles -> evaluation -> report, resumable.

Each step writes its files atomically into the run folder and is skipped when its output is
already there, so running the same command again finishes an interrupted run and never
redoes (or overwrites) finished work. A run folder made with another config is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from allwen import __version__
from allwen.config import Config, config_to_yaml, save_config
from allwen.config.load import build_config
from allwen.data.audit import audit_table
from allwen.data.sources import load_source
from allwen.data.splits import Split, leakage_summary, load_split, make_split, save_split
from allwen.data.table import ImageTable
from allwen.io import atomic_write_json

log = logging.getLogger(__name__)


class PipelineError(ValueError):
    """The run cannot go on; the message says what to change."""


@dataclass
class PreparedRun:
    cfg: Config
    run_dir: Path
    table: ImageTable
    split: Split
    audit: dict[str, Any]

    def describe(self) -> str:
        folds = ", ".join(f"{len(t)}/{len(v)}" for t, v in self.split.folds)
        notes = "".join(f"\nnote: {n}" for n in self.split.notes)
        return (
            f"run folder: {self.run_dir}\n{len(self.table)} images ({self.table.source}); split {self.split.method}: "
            f"test {len(self.split.test)}, folds (train/val) {folds}\n{leakage_summary(self.split.leakage)}{notes}"
        )


@dataclass
class RunResult:
    run_dir: Path
    report_html: Path
    summary: dict[str, Any]


# what a run folder derives from its config; the content-keyed feature cache stays valid
DERIVED = ("data", "splits", "units", "ensembles", "report", "run.json")


def _check_same_config(cfg: Config, run_dir: Path) -> None:
    """Resume only with the same config; a folder with no finished unit may take a new one."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text())
    try:  # a config saved before a key was added lacks it: compare after filling in the defaults
        saved = build_config(saved).model_dump(mode="json")
    except ValueError:
        pass
    now = cfg.model_dump(mode="json")
    if saved == now:
        return
    diffs = ", ".join(_diff_keys(saved, now)[:8])
    if any(run_dir.glob("units/*/fold_*/unit.json")):
        raise PipelineError(
            f"{run_dir} holds trained units made with another config (differs at: {diffs}); "
            "they are never overwritten: use a new --out folder, or the same config to resume"
        )
    log.warning("%s: no unit had finished; starting again with the new config (differs at: %s)", run_dir, diffs)
    for name in DERIVED:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def prepare_run(cfg: Config, run_dir: Path) -> PreparedRun:
    """Load and audit the data, make or reuse the split, write config and split files."""
    run_dir = Path(run_dir)
    _check_same_config(cfg, run_dir)
    table = load_source(cfg.data.path, cfg.data.source, cfg.data.view)  # before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)
    audit_path = run_dir / "data" / "audit.json"
    if audit_path.exists():
        audit = json.loads(audit_path.read_text())
    else:
        audit = audit_table(table).to_json()
        atomic_write_json(audit_path, audit)
    if audit["unreadable"]:
        log.warning("%d unreadable files are left out (see %s)", len(audit["unreadable"]), audit_path)
        table = table.subset(~table.frame["path"].isin(set(audit["unreadable"])))
    split_dir = run_dir / "splits"
    if (split_dir / "split.csv").exists():
        split = load_split(split_dir, table)
    else:
        split = make_split(table, cfg.split)
        save_split(split, table, split_dir)
    log.info("split %s\n%s", split.method, leakage_summary(split.leakage))
    return PreparedRun(cfg, run_dir, table, split, audit)


def _write_status(run_dir: Path, **fields: Any) -> None:
    path = run_dir / "run.json"
    status = json.loads(path.read_text()) if path.exists() else {
        "allwen_version": __version__, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    status.update(fields)
    atomic_write_json(path, status)


def run_pipeline(cfg: Config, run_dir: Path, quiet: bool = False) -> RunResult:
    """The whole protocol; every step resumes from what the run folder already holds."""
    from allwen.training.runner import run_grid

    started = time.perf_counter()
    prepared = prepare_run(cfg, run_dir)
    _write_status(prepared.run_dir, state="training")
    units = run_grid(cfg, prepared.table, prepared.split, prepared.run_dir, quiet=quiet)
    _write_status(prepared.run_dir, state="evaluating", units=len(units))
    result = evaluate_and_report(prepared.run_dir, prepared)
    _write_status(
        prepared.run_dir, state="finished", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        last_command_seconds=round(time.perf_counter() - started, 1),
    )
    return result


def evaluate_and_report(run_dir: Path, prepared: PreparedRun | None = None) -> RunResult:
    """Ensembles, statistics, summary.json and the report, from saved predictions only."""
    from allwen.evaluation.run import evaluate_run
    from allwen.report import build_report

    run_dir = Path(run_dir)
    cfg = prepared.cfg if prepared else load_run_config(run_dir)
    check_units_finished(cfg, run_dir)
    summary = evaluate_run(run_dir, cfg, audit=prepared.audit if prepared else None)
    html = build_report(run_dir)
    return RunResult(run_dir, html, summary)


def check_units_finished(cfg: Config, run_dir: Path) -> None:
    """Evaluate only a complete grid: a partial one would be reported as the result."""
    from allwen.config import expand_scenarios  # not training.runner: a report needs no torch

    split_json = run_dir / "splits" / "split.json"
    if not split_json.exists():
        raise PipelineError(f"{split_json} not found: run `allwen run CONFIG --out {run_dir}` first")
    n_folds = len(json.loads(split_json.read_text())["folds"])
    planned = [run_dir / "units" / name / f"fold_{k}" for name, _ in expand_scenarios(cfg) for k in range(n_folds)]
    missing = [str(p.relative_to(run_dir / "units")) for p in planned if not (p / "unit.json").exists()]
    if missing:
        raise PipelineError(
            f"{len(planned) - len(missing)} of {len(planned)} units are finished (missing: {', '.join(missing[:5])}); "
            f"run `allwen run CONFIG --out {run_dir}` with the run's config to finish them"
        )
    planned_names = {p.relative_to(run_dir / "units").as_posix() for p in planned}
    extra = [p.relative_to(run_dir / "units").as_posix() for p in run_dir.glob("units/*/fold_*")]
    extra = sorted(set(extra) - planned_names)
    if extra:
        raise PipelineError(f"{run_dir / 'units'} holds units the config does not plan: {extra[:5]}")


def load_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise PipelineError(f"{path} not found: {run_dir} is not an allwen run folder")
    return build_config(yaml.safe_load(path.read_text()))


def rebuild_report(run_dir: Path) -> Path:
    """``allwen report``: recompute evaluation and report of a run from its saved files."""
    return evaluate_and_report(Path(run_dir)).report_html


__all__ = ["PipelineError", "PreparedRun", "RunResult", "prepare_run", "run_pipeline", "rebuild_report", "config_to_yaml"]
