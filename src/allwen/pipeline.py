"""``allwen run``: split -> train every unit -> ensembles -> evaluation -> report, resumable.

Each step writes its files atomically into the run folder and is skipped when its output is
already there, so running the same command again finishes an interrupted run and never
redoes (or overwrites) finished work. A run folder made with another config is refused.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager


from allwen import __version__
from allwen.config import Config, config_to_yaml
from allwen.config.load import ConfigError, build_config
from allwen.errors import StoppedAtBoundary
from allwen.failpoints import failpoint
from allwen.lock import run_lock
from allwen.progress import duration
from allwen.runfolder import RunFolder
from allwen.runfolder.state import RunStateError, check_same_config, now, run_log, write_status

if TYPE_CHECKING:  # the data modules import pandas: loaded where a run needs them, not for a report
    from allwen.data.splits import Split
    from allwen.data.table import ImageTable

log = logging.getLogger(__name__)


PipelineError = RunStateError  # the run cannot go on; the message says what to change


@dataclass
class PreparedRun:
    cfg: Config
    run_dir: Path
    table: ImageTable
    split: Split
    audit: dict[str, Any]

    def describe(self) -> str:
        from allwen.data.splits import leakage_summary

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
    summary: Any  # allwen.evaluation.results.Summary (imported lazily: the CLI starts fast)


def resolve_pretrained(cfg: Config) -> Config:
    """``model.pretrained_tag: null`` made the tag timm builds (its default for the backbone), so the
    run folder's config.yaml names the weights; left null when scenarios or sweep steps vary the
    backbone (each unit's ``unit.json`` records its own tag then)."""
    if cfg.model.pretrained_tag is not None:
        return cfg
    varied = {key for key in cfg.scenarios} | {key for step in cfg.sweep for key in step}
    if varied & {"model", "model.backbone", "model.pretrained_tag"}:
        return cfg
    from allwen.models import resolve_pretrained_tag

    try:
        tag = resolve_pretrained_tag(cfg.model.backbone)
    except ValueError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
    if tag is None or "." in cfg.model.backbone:
        return cfg
    resolved = cfg.model_copy(deep=True)
    resolved.model.pretrained_tag = tag
    return resolved


def prepare_run(cfg: Config, run_dir: Path) -> PreparedRun:
    """Load and audit the data, make or reuse the split, write config and split files."""
    from allwen.data.audit import audit_table
    from allwen.data.hashes import HashRecord
    from allwen.data.sources import load_source
    from allwen.data.splits import leakage_summary, load_split, make_split, save_split

    run_dir = Path(run_dir)
    cfg = resolve_pretrained(cfg)
    folder = RunFolder(run_dir)
    check_same_config(folder, cfg, lambda saved: resolve_pretrained(build_config(saved)))
    hashes = HashRecord.load(folder.hashes_path)  # a resume hashes only files whose size or mtime changed
    table = load_source(cfg.data.path, cfg.data.source, cfg.data.view, hashes=hashes)  # before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    if hashes.hashed:
        hashes.save()
    folder.write_config(cfg)
    write_status(folder)
    folder.record_in_status(folder.config_path)
    hashes = None  # perceptual hashes the audit made, so the split need not decode again
    audit = folder.audit()
    if audit is None:
        report = audit_table(table, cfg.data.max_pixels, cfg.split.phash_distance)
        audit, hashes = report.to_json(), report.phashes
        folder.write_audit(audit)
        failpoint("audit_written")
    _log_left_out_and_converted(audit, folder.audit_path)
    if audit["unreadable"]:
        keep = ~table.frame["path"].isin(set(audit["unreadable"])).to_numpy()
        table = table.subset(keep)
        hashes = hashes[keep] if hashes is not None else None
    if folder.has_split():
        split = load_split(folder, table)
    else:
        features = None
        if cfg.split.duplicate_aware and cfg.split.feature_cosine is not None:
            from allwen.training.feature_cache import FeatureCache

            features = FeatureCache(folder.cache_dir / "features").stage1_features(table.frame["sha256"].tolist())
            if features:
                log.info("near-duplicates by backbone features too: the feature cache holds %d stage-1 store(s)",
                         len(features))
        split = make_split(table, cfg.split, hashes=hashes, features=features, max_pixels=cfg.data.max_pixels)
        save_split(split, table, folder)
        failpoint("split_written")
    log.info("split %s\n%s", split.method, leakage_summary(split.leakage))
    return PreparedRun(cfg, run_dir, table, split, audit)


def _log_left_out_and_converted(audit: dict[str, Any], audit_path: Path) -> None:
    """Name every image left out or converted, in the run log (and on screen, briefly)."""
    reasons = audit.get("unreadable_reasons") or {p: "unreadable" for p in audit["unreadable"]}
    for path, why in sorted(reasons.items()):
        log.info("left out %s: %s", path, why)
    for path, note in sorted((audit.get("converted") or {}).items()):
        log.info("converted %s: %s", path, note)
    if reasons:
        named = "; ".join(f"{Path(p).name} ({why})" for p, why in sorted(reasons.items())[:5])
        more = f" and {len(reasons) - 5} more" if len(reasons) > 5 else ""
        log.warning("%d images are left out: %s%s (all listed in %s)", len(reasons), named, more, audit_path)
    if audit.get("converted"):
        log.warning("%d images were converted to 8-bit RGB (each listed in %s and the run log)",
                    len(audit["converted"]), audit_path)


def run_pipeline(cfg: Config, run_dir: Path, quiet: bool = False, executor: str = "sequential",
                 address: str | None = None, cpus_per_unit: int = 1, stop_after: float | None = None) -> RunResult:
    """The whole protocol; every step resumes from what the run folder already holds.

    ``executor="ray"`` trains the units as Ray tasks (on a local instance, or the cluster at
    ``address``); ensembles, evaluation and the report run here, as with the sequential one.
    ``stop_after`` seconds (else ``train.time_limit``): no unit starts after that long; the run
    stops there with :class:`~allwen.errors.StoppedAtBoundary` and the same call resumes it.
    """
    from allwen.config.schema import parse_duration
    from allwen.sweep import record_last_step, run_sweep_steps
    from allwen.training.runner import run_grid

    started = time.perf_counter()
    limit = stop_after if stop_after is not None else (
        parse_duration(cfg.train.time_limit) if cfg.train.time_limit else None)
    stop_at = None if limit is None else time.monotonic() + limit
    folder = RunFolder(run_dir)
    with run_lock(run_dir), run_log(folder):
        log.info("allwen %s: run %s", __version__, run_dir)
        prepared = prepare_run(cfg, run_dir)
        cfg = prepared.cfg  # the pretrained tag resolved
        write_status(folder, state="training")
        grid = {"quiet": quiet, "executor": executor, "address": address, "cpus_per_unit": cpus_per_unit,
                "stop_at": stop_at, "limit_s": limit}
        try:
            final = run_sweep_steps(cfg, prepared.table, prepared.split, prepared.run_dir, **grid)
            units = run_grid(final, prepared.table, prepared.split, prepared.run_dir, **grid)
        except StoppedAtBoundary as stopped:
            write_status(folder, state="stopped", stopped=now(), note=str(stopped))
            log.warning("%s", stopped)
            raise
        record_last_step(cfg, prepared.run_dir)
        write_status(folder, state="evaluating", units=len(units))
        with _heartbeat(quiet, lambda: f"progress: {len(units)}/{len(units)} units done; evaluating ensembles and "
                                       f"statistics, writing the report; {duration(time.perf_counter() - started)} elapsed"):
            result = _evaluate_and_report(prepared.run_dir, prepared)
        write_status(folder, state="finished", finished=now(), last_command_seconds=round(time.perf_counter() - started, 1))
    return result


def _heartbeat(quiet: bool, line: Callable[[], str]) -> ContextManager[Any]:
    """A timed progress line for a long step when no one watches a live display (logs, pipes)."""
    from allwen.progress import Heartbeat, live

    return nullcontext() if quiet or live() else Heartbeat(line)


def split_run(cfg: Config, run_dir: Path) -> PreparedRun:
    """``allwen split``: :func:`prepare_run` while holding the run folder."""
    with run_lock(run_dir), run_log(RunFolder(run_dir)):
        return prepare_run(cfg, run_dir)


def _evaluate_and_report(run_dir: Path, prepared: PreparedRun | None = None) -> RunResult:
    """Ensembles, statistics, summary.json and the report, from saved predictions only.

    The caller holds the run folder's lock.
    """
    from allwen.evaluation.run import evaluate_run
    from allwen.report import build_report
    from allwen.sweep import final_config

    run_dir = Path(run_dir)
    cfg = prepared.cfg if prepared else load_run_config(run_dir)
    cfg = final_config(cfg, run_dir)  # a sweep's run is its last step's grid
    check_units_finished(cfg, run_dir)
    summary = evaluate_run(run_dir, cfg, audit=prepared.audit if prepared else None)
    folder = RunFolder(run_dir)
    folder.record_in_status(folder.config_path, folder.summary_path)
    failpoint("summary_written")
    html = build_report(run_dir)
    return RunResult(run_dir, html, summary)


def check_summary(run_dir: Path) -> None:
    """``report/summary.json`` is the one evaluation wrote (its sha256 is in ``run.json``)."""
    RunFolder(run_dir).check_summary()


def check_units_finished(cfg: Config, run_dir: Path) -> None:
    """Evaluate only a complete grid: a partial one would be reported as the result."""
    from allwen.config import expand_scenarios  # not training.runner: a report needs no torch
    from allwen.runfolder.state import check_units_finished as check

    check(RunFolder(run_dir), [name for name, _ in expand_scenarios(cfg)])


def load_run_config(run_dir: Path) -> Config:
    """The run's validated ``config.yaml``."""
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        raise PipelineError(f"{folder.config_path} not found: {run_dir} is not an allwen run folder")
    return folder.load_config()


def rebuild_report(run_dir: Path) -> Path:
    """``allwen report``: recompute evaluation and report of a run from its saved files."""
    run_dir = Path(run_dir)
    if not RunFolder(run_dir).config_path.exists():
        raise PipelineError(f"{RunFolder(run_dir).config_path} not found: {run_dir} is not an allwen run folder")
    with run_lock(run_dir), run_log(RunFolder(run_dir)):
        return _evaluate_and_report(run_dir).report_html


__all__ = ["PipelineError", "PreparedRun", "RunResult", "prepare_run", "split_run", "run_pipeline", "rebuild_report",
           "check_summary", "config_to_yaml"]
