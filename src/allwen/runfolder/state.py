"""A run folder's bookkeeping: its state in ``run.json``, its log, whether a config may resume
it, and whether its units are all finished. The steps that fill the folder are
:mod:`allwen.pipeline`'s; what they may find here is decided here.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from allwen import __version__
from allwen.config.load import ConfigError
from allwen.config.schema import Config
from allwen.io import read_yaml
from allwen.runfolder.layout import RunFolder, unit_name

log = logging.getLogger(__name__)

# keys that change only speed or logging: a run may resume with others (train.devices keeps the
# global batch; per-device BatchNorm statistics and random draws make its numbers close, not equal)
SPEED_KEYS = ("data.num_workers", "data.decode_cache", "train.logger", "train.eval_batch_size", "train.devices",
              "train.frozen_runtime", "train.time_limit")  # runtimes agree to 1e-4 (checked before use)
# sections that only say what the report sets beside the results (the paper's numbers)
REPORT_SECTIONS = ("paper",)


class RunStateError(ValueError):
    """The run cannot go on; the message says what to change."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_status(folder: RunFolder, **fields: Any) -> None:
    """Update ``run.json``; the first write also records the allwen version and the start time."""
    if not folder.status_path.exists():
        fields = {"allwen_version": __version__, "started": now(), **fields}
    folder.write_status(**fields)


@contextmanager
def run_log(folder: RunFolder) -> Iterator[None]:
    """Append allwen's INFO log lines to the run's log file while a command works on the run."""
    handler = logging.FileHandler(folder.log_path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("allwen")
    previous = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)  # the file gets INFO even when the screen shows warnings only
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
        handler.close()


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two nested mappings differ, sorted."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def check_same_config(folder: RunFolder, cfg: Config, resolve: Callable[[dict[str, Any]], Config]) -> None:
    """Resume only with the same config; a folder with no finished unit may take a new one.

    ``resolve`` turns the saved YAML into the config it means today (keys added to the schema
    since the run was made take their defaults, the pretrained tag is resolved) and raises
    :class:`ConfigError` when it is not valid now."""
    if not folder.config_path.exists():
        return
    fix = "restore it, or use a new --out folder (a run's config is never guessed)"
    folder.check_recorded(folder.config_path, fix)
    saved = read_yaml(folder.config_path, fix)
    try:
        saved = resolve(saved).model_dump(mode="json")
    except ConfigError:
        pass  # not valid now: the difference below names the keys
    changed = diff_keys(saved, cfg.model_dump(mode="json"))
    if not changed:
        return
    if all(key in SPEED_KEYS or key.split(".")[0] in REPORT_SECTIONS for key in changed):
        log.info("%s: resuming with other speed/logging/paper settings (%s)", folder.root, ", ".join(changed))
        return
    diffs = ", ".join(changed[:8])
    if folder.has_trained_units():
        raise RunStateError(
            f"{folder.root} holds trained units made with another config (differs at: {diffs}); "
            "they are never overwritten: use a new --out folder, or the same config to resume"
        )
    log.warning("%s: no unit had finished; starting again with the new config (differs at: %s)", folder.root, diffs)
    folder.clear_derived()


def check_units_finished(folder: RunFolder, scenarios: list[str]) -> None:
    """Evaluate only a complete grid (``scenarios`` x the split's folds): a partial one would be
    reported as the result, and a unit the config does not plan is refused."""
    if not folder.split_json.exists():
        raise RunStateError(f"{folder.split_json} not found: run `allwen run CONFIG --out {folder.root}` first")
    planned = [(name, k) for name in scenarios for k in range(folder.n_folds())]
    missing = [unit_name(s, k) for s, k in planned if not folder.is_finished(s, k)]
    if missing:
        raise RunStateError(
            f"{len(planned) - len(missing)} of {len(planned)} units are finished (missing: {', '.join(missing[:5])}); "
            f"run `allwen run CONFIG --out {folder.root}` with the run's config to finish them"
        )
    on_disk = {unit_name(s, k) for s, folds in folder.unit_folders().items() for k, _ in folds}
    extra = sorted(on_disk - {unit_name(s, k) for s, k in planned})
    if extra:
        raise RunStateError(f"{folder.units_dir} holds units the config does not plan: {extra[:5]}")


__all__ = ["REPORT_SECTIONS", "SPEED_KEYS", "RunStateError", "check_same_config", "check_units_finished",
           "diff_keys", "now", "run_log", "write_status"]
