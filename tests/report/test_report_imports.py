"""`allwen report` must not import pandas or scipy.stats: together they cost over a second of
the report's 2-second budget (benchmarks/report_speed.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.runfolder import RunFolder

SRC = Path(__file__).resolve().parents[2] / "src"


def test_report_runs_with_pandas_and_scipy_stats_blocked(tmp_path):
    for subjects in (True, False):  # cluster statistics, and McNemar + DeLong over images
        run_dir = tmp_path / f"run_{subjects}"
        write_synthetic_run(run_dir, n_test=60, n_test_subjects=6, n_pool=120, n_pool_subjects=8, bootstrap=20,
                            subjects=subjects)
        code = ("import sys\nsys.modules['pandas'] = None\nsys.modules['scipy.stats'] = None\n"
                f"sys.argv = ['allwen', 'report', {str(run_dir)!r}]\n"
                "from allwen.cli import main\nmain()\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr[-3000:]
        summary = load_summary(run_dir)  # a valid results model, and the report shows its best model's numbers
        best = summary.model(summary.best_single)
        page = RunFolder(run_dir).report_html.read_text(encoding="utf-8")
        assert best.name in page and f"{best.metrics.accuracy:.3f}" in page
        assert summary.evaluation.unit == ("subject" if subjects else "image")
