"""``allwen demo``: synthetic cells through the whole Experiment A protocol.

3 learning rates x 5 subject-grouped folds, two stages each, all WENs and baselines,
statistics and the report, with a tiny backbone and 32-pixel cells, on a 2-core CPU.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from allwen.config import load_config
from allwen.data.synth import generate_cnmc
from allwen.pipeline import RunResult, run_pipeline

log = logging.getLogger(__name__)

DEMO_DATA = dict(n_all_subjects=14, n_hem_subjects=12, cells_per_subject=28, image_size=40,
                 prelim_subjects=(2, 2), seed=7, duplicates=4)


def run_demo(out: Path | None = None, quick: bool = False, quiet: bool = False) -> RunResult:
    """Generate the data (once per run folder) and run the ``demo`` preset on it."""
    out = Path(out) if out else Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    data_root = out / "synthetic"
    if not (data_root / "C-NMC_Leukemia").exists():
        summary = generate_cnmc(data_root, **DEMO_DATA)
        log.info("synthetic C-NMC-like dataset: %d images in %s", summary["n_images"], summary["root"])
    overrides = [f"data.path={data_root / 'C-NMC_Leukemia' / 'training_data'}"]
    if quick:
        overrides += ["split.folds=2", "train.stage1.epochs=1", "train.stage2.epochs=1", "evaluation.bootstrap=100"]
    cfg = load_config("demo", overrides)
    return run_pipeline(cfg, out / "run", quiet=quiet)
