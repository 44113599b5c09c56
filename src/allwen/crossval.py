"""``allwen crossval``: the protocol once per test part, then the parts' test predictions pooled.

A single hold-out tests a fifth of the patients; where patients are few (Taleqani's
pseudo-patients, a small subject cohort) its intervals are too wide to be useful. Here every
part of ``round(1/split.test)`` disjoint, grouped parts is the test side of one ordinary run
(``split.test_part: k``, in ``DIR/test_part_<k>/``, resumable like any run, one shared feature
cache), and :func:`allwen.evaluation.crossval.pool_parts` evaluates, role by role, the pooled
test predictions of every image tested once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from allwen.config import Config
from allwen.evaluation.crossval import CrossvalResult, pool_parts
from allwen.io import atomic_write_text
from allwen.runfolder import CrossvalFolder

log = logging.getLogger(__name__)


@dataclass
class CrossvalRun:
    result: CrossvalResult
    json_path: Path
    markdown_path: Path


def part_configs(cfg: Config) -> list[Config]:
    """One config per test part (``split.test_part = 0..K-1``); refuses what cannot be cross-validated."""
    from allwen.data.splits import test_parts

    split = cfg.split
    if split.test == "official":
        raise ValueError("allwen crossval: split.test is 'official' (one fixed test set); set a fraction such as "
                         "split.test=0.2 (5 parts)")
    if split.validate_on == "test":
        raise ValueError("allwen crossval: split.validate_on=test chooses on the test side; use split.validate_on=fold")
    if split.test_part is not None:
        raise ValueError(f"allwen crossval sets split.test_part itself (0 to {test_parts(float(split.test)) - 1}); "
                         f"remove split.test_part={split.test_part} from the config")
    n = test_parts(float(split.test))
    return [Config.model_validate(cfg.model_dump(mode="python") | {
        "split": split.model_dump(mode="python") | {"test_part": k}}) for k in range(n)]


def run_crossval(cfg: Config, out: Path, quiet: bool = False,
                 conformal_levels: tuple[float, ...] | None = None) -> CrossvalRun:
    """Run (or resume) every test part, then pool and write ``crossval.json`` and ``crossval.md``.

    ``conformal_levels``: the levels of the prediction sets measured on the pooled held-out patients
    (default 0.9 and 0.95, as ``allwen export --conformal-levels``).
    """
    from allwen.pipeline import run_pipeline
    from allwen.report.crossval import crossval_markdown

    folder = CrossvalFolder(out)
    configs = part_configs(cfg)
    runs = []
    for k, part_cfg in enumerate(configs):
        log.info("crossval: test part %d of %d", k + 1, len(configs))
        run_dir = folder.prepare_part(k)
        run_pipeline(part_cfg, run_dir, quiet=quiet)
        runs.append(run_dir)
    result = pool_parts(runs, cfg, conformal_levels)
    atomic_write_text(folder.result_path, result.model_dump_json(indent=1))
    atomic_write_text(folder.markdown_path, crossval_markdown(result, cfg.name))
    return CrossvalRun(result=result, json_path=folder.result_path, markdown_path=folder.markdown_path)
